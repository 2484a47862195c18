//! Built-in in-process transforms. Each is a cluster whose stage is a [`Transform`]:
//! it may stand as a destination (Echo answers, Discard swallows) or anywhere in an
//! ingress or egress chain.

crate::protocol::protocols![echo, discard, logger, metric, jsonencap, jsondecap];

/// Implements [`crate::core::ClusterProtocol`] for a transform's spec type; the
/// closure opens the per-session transform (or fails to, as `io::Result`).
macro_rules! transform_cluster {
    ($spec:ty, $name:expr, |$self_:ident, $target:ident| $make:expr) => {
        #[async_trait::async_trait]
        impl $crate::core::ClusterProtocol for $spec {
            fn name(&self) -> &'static str {
                $name
            }
            fn is_virtual(&self) -> bool {
                true
            }
            async fn connect(
                &self,
                $target: $crate::core::Target<'_>,
            ) -> std::io::Result<$crate::core::Stage> {
                let $self_ = self;
                let transform = ($make)?;
                Ok($crate::core::Stage::Transform(Box::new(transform)))
            }
        }
    };
}
pub(crate) use transform_cluster;
