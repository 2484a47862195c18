//! `Echo`: every chunk written comes back unchanged.

use bytes::Bytes;

use super::transform_cluster;
use crate::core::{StageContext, StageError, Transform};
use crate::core::build::Protocol;

pub const NAME: &str = "Echo";

/// Stateless, so the cluster is the transform itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

#[async_trait::async_trait]
impl Transform for Echo {
    async fn process(
        &mut self,
        chunk: Bytes,
        _: &dyn StageContext,
        out: &mut Vec<Bytes>,
    ) -> Result<(), StageError> {
        out.push(chunk);
        Ok(())
    }
}

transform_cluster!(Echo, NAME, |_spec, _target| Ok::<_, std::io::Error>(Echo));

/// Echo; JSONSocket clusters may run over it.
pub const PROTOCOL: Protocol = Protocol::bare_cluster::<Echo>(NAME, Protocol::JSONSOCKET_CLUSTER);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stage::Detached;

    #[tokio::test]
    async fn echoes() {
        let md = serde_json::json!({});
        let cx = Detached::new("s", md.clone());
        let mut out = Vec::new();
        Echo.process(Bytes::from_static(b"hi"), &cx, &mut out)
            .await
            .unwrap();
        assert_eq!(out, vec![Bytes::from_static(b"hi")]);
    }
}
