//! Load balancers: pick a cluster's endpoint for a session stage.
//!
//! `Trivial` takes the first endpoint. `HashRing` (alias `ConsistentHash`) places
//! each endpoint on a hash ring with points in proportion to its weight and hashes the
//! metadata value at `loadbalancer.key`, so sessions with the same key stick to one
//! endpoint and moving an endpoint moves only its share; with no key value in the
//! metadata, it picks at random by weight.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use rand::Rng;
use serde_json::Value;

use crate::json::pointer::Pointer;
use serde::{Deserialize, Serialize};

use crate::core::ConfigError;

/// Ring points per unit of weight.
const POINTS_PER_WEIGHT: f64 = 100.0;
/// The most points a ring holds, whatever the weights: heavier rings are scaled down.
const MAX_RING_POINTS: f64 = 65536.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
/// `cluster.loadbalancer`.
pub struct LoadBalancerSpec {
    #[serde(default = "default_policy")]
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Pointer>,
}

fn default_policy() -> String {
    "Trivial".into()
}

impl Default for LoadBalancerSpec {
    fn default() -> Self {
        LoadBalancerSpec {
            policy: default_policy(),
            key: None,
        }
    }
}

/// What a balancer picks among: a cluster's endpoints.
pub trait Member {
    fn name(&self) -> &str;
    fn weight(&self) -> f64;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Trivial,
    HashRing,
}

impl Policy {
    pub fn parse(name: &str) -> Result<Policy, ConfigError> {
        match name.to_ascii_lowercase().as_str() {
            "trivial" => Ok(Policy::Trivial),
            "hashring" | "consistenthash" => Ok(Policy::HashRing),
            _ => Err(ConfigError::invalid(format!(
                "unknown load-balancer policy '{name}' (known: Trivial, HashRing, ConsistentHash)"
            ))),
        }
    }
}

#[derive(Debug)]
pub struct Balancer<E> {
    policy: Policy,
    key: Option<Pointer>,
    endpoints: Vec<Arc<E>>,
    /// (point, index into `endpoints`), sorted by point.
    ring: Vec<(u64, usize)>,
}

fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl<E: Member> Balancer<E> {
    /// Builds the balancer for a validated spec.
    pub fn new(spec: &LoadBalancerSpec, endpoints: &[Arc<E>]) -> Balancer<E> {
        let policy = Policy::parse(&spec.policy).unwrap_or(Policy::Trivial);
        let mut ring = Vec::new();
        if policy == Policy::HashRing {
            let total: f64 = endpoints
                .iter()
                .map(|e| e.weight() * POINTS_PER_WEIGHT)
                .sum();
            let scale = if total > MAX_RING_POINTS {
                MAX_RING_POINTS / total
            } else {
                1.0
            };
            for (index, ep) in endpoints.iter().enumerate() {
                let share = ep.weight() * POINTS_PER_WEIGHT * scale;
                // Every endpoint with a weight keeps at least one point.
                let points = if ep.weight() > 0.0 {
                    share.round().max(1.0) as usize
                } else {
                    0
                };
                ring.extend((0..points).map(|i| (hash_of((ep.name(), i)), index)));
            }
            ring.sort_unstable();
        }
        Balancer {
            policy,
            key: spec.key.clone(),
            endpoints: endpoints.to_vec(),
            ring,
        }
    }

    /// The endpoint for a session with this metadata; `None` when there is none.
    pub fn pick(&self, metadata: &Value) -> Option<Arc<E>> {
        self.pick_avoiding(metadata, &[])
    }

    /// Like [`Balancer::pick`], but prefers endpoints not named in `avoid` (the ones a
    /// retry just saw fail); when every endpoint is to be avoided, picks as usual.
    pub fn pick_avoiding(&self, metadata: &Value, avoid: &[String]) -> Option<Arc<E>> {
        let usable = |ep: &Arc<E>| !avoid.iter().any(|a| a == ep.name());
        match self.policy {
            Policy::Trivial => self
                .endpoints
                .iter()
                .find(|ep| usable(ep))
                .or(self.endpoints.first())
                .cloned(),
            Policy::HashRing => {
                let key = self.key.as_ref().and_then(|k| k.get(metadata));
                match key {
                    Some(value) => self.on_ring(value, &usable),
                    None => self
                        .random_by_weight(&usable)
                        .or_else(|| self.random_by_weight(&|_| true)),
                }
            }
        }
    }

    /// The first endpoint at or after the key's point on the ring that is usable, or
    /// the key's own endpoint when none is.
    fn on_ring(&self, key: &Value, usable: &dyn Fn(&Arc<E>) -> bool) -> Option<Arc<E>> {
        if self.ring.is_empty() {
            return None;
        }
        let h = match key {
            Value::String(s) => hash_of(s),
            other => hash_of(other.to_string()),
        };
        let at = self.ring.partition_point(|(point, _)| *point < h) % self.ring.len();
        let walk = self.ring[at..].iter().chain(&self.ring[..at]);
        let found = walk
            .map(|(_, i)| &self.endpoints[*i])
            .find(|ep| usable(ep))
            .unwrap_or(&self.endpoints[self.ring[at].1]);
        Some(found.clone())
    }

    fn random_by_weight(&self, usable: &dyn Fn(&Arc<E>) -> bool) -> Option<Arc<E>> {
        let weight = |ep: &Arc<E>| if usable(ep) { ep.weight() } else { 0.0 };
        let total: f64 = self.endpoints.iter().map(weight).sum();
        if total <= 0.0 {
            return None;
        }
        let mut dart = rand::rng().random_range(0.0..total);
        for ep in &self.endpoints {
            dart -= weight(ep);
            if dart < 0.0 {
                return Some(ep.clone());
            }
        }
        self.endpoints.iter().rev().find(|ep| usable(ep)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, EndpointSpec};
    use serde_json::json;
    use std::collections::HashMap;

    fn endpoints(weights: &[f64]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Endpoint {
                    name: format!("ep{i}"),
                    cluster: "c".into(),
                    spec: EndpointSpec {
                        address: Some(format!("10.0.0.{i}")),
                        ..Default::default()
                    },
                    weight: *w,
                    autogenerated: false,
                })
            })
            .collect()
    }

    fn ring(weights: &[f64]) -> Balancer<Endpoint> {
        let spec = LoadBalancerSpec {
            policy: "HashRing".into(),
            key: Some(Pointer::parse("/labels/user").unwrap()),
        };
        Balancer::new(&spec, &endpoints(weights))
    }

    #[test]
    fn trivial_takes_the_first() {
        let b = Balancer::new(&LoadBalancerSpec::default(), &endpoints(&[1.0, 1.0]));
        assert_eq!(b.pick(&json!({})).unwrap().name, "ep0");
        assert!(
            Balancer::<Endpoint>::new(&LoadBalancerSpec::default(), &[])
                .pick(&json!({}))
                .is_none()
        );
    }

    #[test]
    fn ring_is_sticky_and_spreads_by_weight() {
        let b = ring(&[1.0, 3.0]);
        let mut counts = HashMap::new();
        for user in 0..2000 {
            let md = json!({"labels": {"user": format!("user-{user}")}});
            let first = b.pick(&md).unwrap().name.clone();
            assert_eq!(b.pick(&md).unwrap().name, first);
            *counts.entry(first).or_insert(0) += 1;
        }
        let heavy = counts["ep1"] as f64 / 2000.0;
        assert!((0.6..0.9).contains(&heavy), "{counts:?}");
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let before = ring(&[1.0, 1.0, 1.0]);
        let mut eps = endpoints(&[1.0, 1.0, 1.0]);
        eps.remove(2);
        let spec = LoadBalancerSpec {
            policy: "ConsistentHash".into(),
            key: Some(Pointer::parse("labels/user").unwrap()),
        };
        let after = Balancer::new(&spec, &eps);
        for user in 0..500 {
            let md = json!({"labels": {"user": user}});
            let was = before.pick(&md).unwrap().name.clone();
            if was != "ep2" {
                assert_eq!(after.pick(&md).unwrap().name, was);
            }
        }
    }

    #[test]
    fn retries_avoid_the_endpoints_that_failed() {
        let avoid = vec!["ep0".to_owned()];
        let trivial = Balancer::new(&LoadBalancerSpec::default(), &endpoints(&[1.0, 1.0]));
        assert_eq!(
            trivial.pick_avoiding(&json!({}), &avoid).unwrap().name,
            "ep1"
        );
        let all = vec!["ep0".to_owned(), "ep1".to_owned()];
        assert_eq!(trivial.pick_avoiding(&json!({}), &all).unwrap().name, "ep0");
        let b = ring(&[1.0, 1.0]);
        for user in 0..50 {
            let md = json!({"labels": {"user": user}});
            assert_eq!(b.pick_avoiding(&md, &avoid).unwrap().name, "ep1");
        }
        for _ in 0..50 {
            assert_eq!(b.pick_avoiding(&json!({}), &avoid).unwrap().name, "ep1");
        }
    }

    #[test]
    fn heavy_rings_are_scaled_down() {
        let b = ring(&[10_000.0, 10_000.0, 0.001]);
        assert!(
            b.ring.len() <= MAX_RING_POINTS as usize + 3,
            "{}",
            b.ring.len()
        );
        assert!(
            b.ring.iter().any(|(_, i)| *i == 2),
            "a tiny weight keeps a point"
        );
    }

    #[test]
    fn no_key_picks_by_weight() {
        let b = ring(&[0.0, 1.0]);
        for _ in 0..50 {
            assert_eq!(b.pick(&json!({})).unwrap().name, "ep1");
        }
        assert!(Policy::parse("Random").is_err());
    }
}
