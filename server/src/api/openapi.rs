//! Placeholder until the OpenAPI module lands.
#![allow(missing_docs)]
use bytes::Bytes;
pub struct OpenApi;
impl OpenApi {
    pub fn v2(&self) -> Bytes {
        Bytes::from_static(b"{\"swagger\":\"2.0\",\"info\":{\"title\":\"Kubernetes\",\"version\":\"v1.37.0\"},\"paths\":{},\"definitions\":{}}")
    }
    pub fn v3_index(&self) -> Bytes {
        Bytes::from_static(b"{\"paths\":{}}")
    }
    pub fn v3(&self, _path: &str) -> Option<(Bytes, &str)> {
        None
    }
}
pub fn openapi() -> &'static OpenApi {
    &OpenApi
}
