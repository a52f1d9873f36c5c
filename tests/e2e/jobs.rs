//! Jobs and CronJobs on simulated nodes.
