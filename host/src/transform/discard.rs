//! `Discard`: swallows every chunk; nothing ever comes back.

use bytes::Bytes;

use super::transform_cluster;
use crate::core::{StageContext, StageError, Transform};
use crate::core::build::Protocol;

pub const NAME: &str = "Discard";

/// Stateless, so the cluster is the transform itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

#[async_trait::async_trait]
impl Transform for Discard {
    async fn process(
        &mut self,
        _: Bytes,
        _: &dyn StageContext,
        _: &mut Vec<Bytes>,
    ) -> Result<(), StageError> {
        Ok(())
    }
}

transform_cluster!(Discard, NAME, |_spec, _target| Ok::<_, std::io::Error>(
    Discard
));

/// Discard; JSONSocket clusters may run over it.
pub const PROTOCOL: Protocol = Protocol::bare_cluster::<Discard>(NAME, Protocol::JSONSOCKET_CLUSTER);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stage::Detached;

    #[tokio::test]
    async fn swallows() {
        let md = serde_json::json!({});
        let mut out = Vec::new();
        Discard
            .process(
                Bytes::from_static(b"x"),
                &Detached::new("s", md.clone()),
                &mut out,
            )
            .await
            .unwrap();
        assert!(out.is_empty());
    }
}
