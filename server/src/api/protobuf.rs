//! Placeholder until the protobuf decoder lands.
#![allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
#[error("protobuf request bodies are not supported yet")]
pub struct ProtobufError;
pub fn decode(_body: &[u8]) -> Result<serde_json::Value, ProtobufError> {
    Err(ProtobufError)
}
