//! Work upstream does in controllers. Each one is a pure decision (`reconcile`) and a
//! small driver that feeds it and carries out what it returns.
//!
//! Only namespace deletion lives here for now, on the store directly, because a
//! namespace cannot be deleted without it; the scheduler and the other controllers come
//! with their own issue, as clients of the API over loopback.

pub mod namespace;
