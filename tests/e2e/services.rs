//! Endpoints, EndpointSlices, default ServiceAccounts and ResourceQuota usage.
