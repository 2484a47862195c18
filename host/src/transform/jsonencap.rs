//! `JSONEncap`: each chunk becomes `{"metadata": <session metadata>, "payload":
//! "<base64 of the chunk>"}`, so a downstream peer sees the session's (rewritten)
//! metadata with every message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::json;

use super::transform_cluster;
use crate::core::{StageContext, StageError, Transform};
use crate::core::build::Protocol;

pub const NAME: &str = "JSONEncap";

/// Stateless, so the cluster is the transform itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonEncap;

#[async_trait::async_trait]
impl Transform for JsonEncap {
    async fn process(
        &mut self,
        chunk: Bytes,
        cx: &dyn StageContext,
        out: &mut Vec<Bytes>,
    ) -> Result<(), StageError> {
        let metadata = cx.metadata();
        let doc = json!({ "metadata": &*metadata, "payload": STANDARD.encode(&chunk) });
        out.push(Bytes::from(
            serde_json::to_vec(&doc).map_err(|e| StageError::Chunk(e.to_string()))?,
        ));
        Ok(())
    }
}

transform_cluster!(JsonEncap, NAME, |_spec, _target| Ok::<_, std::io::Error>(
    JsonEncap
));

/// JSONEncap.
pub const PROTOCOL: Protocol = Protocol::bare_cluster::<JsonEncap>(NAME, Protocol::CARRIES_NOTHING);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stage::Detached;

    #[tokio::test]
    async fn wraps_metadata_and_payload() {
        let md = json!({"labels": {"user": "u1"}});
        let mut out = Vec::new();
        JsonEncap
            .process(
                Bytes::from_static(b"\x00hi"),
                &Detached::new("s", md.clone()),
                &mut out,
            )
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"user": "u1"}}, "payload": "AGhp"})
        );
    }

    #[tokio::test]
    async fn sees_a_rewrite_made_by_another_stage_while_it_runs() {
        let cx = Detached::new("s", json!({"v": 1}));
        let mut out = Vec::new();
        JsonEncap
            .process(Bytes::from_static(b"a"), &cx, &mut out)
            .await
            .unwrap();
        // A plugin elsewhere on the ring replaces the session's metadata.
        cx.replace_metadata(json!({"v": 2}));
        JsonEncap
            .process(Bytes::from_static(b"b"), &cx, &mut out)
            .await
            .unwrap();
        let v = |chunk: &Bytes| serde_json::from_slice::<serde_json::Value>(chunk).unwrap()["metadata"]["v"].clone();
        assert_eq!((v(&out[0]), v(&out[1])), (json!(1), json!(2)));
    }
}
