//! `skiff-server`: the control plane.
//!
//! Start reading at [`run`]: it reads the [`Config`], prepares the PKI, opens the
//! [`store`] and serves the Kubernetes API from [`api`]. Each kind's rules (defaults,
//! validation, printer columns, patch metadata) live in [`registry`].

pub mod store;
