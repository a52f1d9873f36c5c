//! `/v1-skiff/secrets-encrypt/…`: what `skiff secrets-encrypt` asks the running server.
//! Only `system:masters` (the admin kubeconfig) may ask.

use super::status::{ApiError, ApiResult};
use super::{json_response, Api, Body, User};
use crate::encryption::{Error, Status, ADMIN_GROUP};
use http::{Method, Response};

/// Serves `action` (`status` or `rotate-keys`) for `user`.
pub async fn serve(
    api: &Api,
    method: &Method,
    action: &str,
    user: &User,
) -> ApiResult<Response<Body>> {
    if !user.in_group(ADMIN_GROUP) {
        return Err(ApiError::forbidden(
            "",
            "secrets-encrypt",
            "",
            format!("User {:?} cannot manage secrets encryption", user.name),
        ));
    }
    let status = match (action, method) {
        ("status", &Method::GET) => match &api.encryption {
            Some(enc) => enc.status(),
            None => Status::disabled(),
        },
        ("rotate-keys", &Method::POST | &Method::PUT) => {
            let enc = api
                .encryption
                .as_ref()
                .ok_or_else(|| ApiError::bad_request(Error::Disabled.to_string()))?;
            enc.rotate_keys(&api.store).await.map_err(|e| match e {
                Error::Disabled => ApiError::bad_request(e.to_string()),
                e => {
                    tracing::error!(error = %super::status::error_chain(&e), "rotating the secrets encryption keys failed");
                    ApiError::internal(super::status::error_chain(&e))
                }
            })?
        }
        ("status" | "rotate-keys", m) => return Err(ApiError::method_not_allowed(m.as_str())),
        _ => return Err(ApiError::no_route()),
    };
    let body = serde_json::to_value(&status)
        .map_err(|e| ApiError::internal(format!("encoding the status: {e}")))?;
    Ok(json_response(200, &body))
}
