//! The l7mp CRDs (group `l7mp.io`, version `v1`): `VirtualService` (a listener and its
//! rules on the selected proxies), `Target` (a cluster and its endpoints, static or
//! by pod selector), `Rule` (one rule put into a rulelist). Their specs keep the
//! original operator's format: the protocol's settings nested under the protocol's
//! name (`spec: {UDP: {port: 5053}}`), references as `*Ref`; the parts that are the
//! proxy's own model (listener and cluster specs, rules) are kept as the user wrote
//! them (`x-kubernetes-preserve-unknown-fields`) and checked when translated.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An object of the proxy's own model, kept as written.
fn free_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// A list of such objects (rules).
fn free_objects(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// Which proxies (pods) an object goes to: Kubernetes' label selector, field
/// requirements, and the original's namespace and service matches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
    /// Requirements on pod fields (`metadata.name`, `spec.nodeName`, `status.podIP`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_fields: Vec<Requirement>,
    /// Only pods of this namespace (default: the object's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_namespace: Option<String>,
    /// Only pods this Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_service: Option<String>,
}

/// `{key, operator: In | NotIn | Exists | DoesNotExist, values}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// What the operator saw and did, per object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation each selected pod's proxy has applied, by pod name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied: BTreeMap<String, i64>,
}

/// A status condition, as Kubernetes writes them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// A listener and its rules, on every selected proxy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "l7mp.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    shortname = "vsvc",
    status = "ObjectStatus",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub selector: Selector,
    pub listener: ListenerDef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerDef {
    /// The listener's spec: `{UDP: {port: 5053}}` (or the proxy's `{protocol: UDP, ...}`).
    #[schemars(schema_with = "free_object")]
    pub spec: Value,
    /// Its rules, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_objects")]
    pub rules: Option<Value>,
    /// Or a rulelist another object defines (`/l7mp.io/v1/Rule/...` or a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub options: Option<Value>,
}

/// A cluster and its endpoints, on every selected proxy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "l7mp.io",
    version = "v1",
    kind = "Target",
    namespaced,
    shortname = "tr",
    status = "ObjectStatus",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    #[serde(default)]
    pub selector: Selector,
    pub cluster: ClusterDef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDef {
    /// The cluster's spec: `{UDP: {port: 19000}}` (or `{protocol: UDP, ...}`).
    #[schemars(schema_with = "free_object")]
    pub spec: Value,
    /// Static endpoints (`spec`), or the pods a `selector` picks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointDef>,
    /// Endpoints are the proxies a VirtualService selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_virtual_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub loadbalancer: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub options: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object")]
    pub spec: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

/// One rule, put into a rulelist of the selected proxies.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "l7mp.io",
    version = "v1",
    kind = "Rule",
    namespaced,
    status = "ObjectStatus",
    printcolumn = r#"{"name": "Rulelist", "type": "string", "jsonPath": ".spec.rulelist"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    #[serde(default)]
    pub selector: Selector,
    pub rulelist: String,
    /// Where in the rulelist (default: last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[schemars(schema_with = "free_object")]
    pub rule: Value,
}

/// Every CRD, as `kubectl apply` takes them.
pub fn all()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![VirtualService::crd(), Target::crd(), Rule::crd()]
}

/// The CRDs as one YAML stream.
pub fn yaml() -> String {
    all()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    #[test]
    fn the_crds_are_what_kubectl_takes() {
        let yaml = yaml();
        let crds: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|doc| CustomResourceDefinition::deserialize(doc).unwrap())
            .collect();
        let names: Vec<(&str, Vec<String>)> = crds
            .iter()
            .map(|c| {
                (
                    c.spec.names.kind.as_str(),
                    c.spec.names.short_names.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("VirtualService", vec!["vsvc".to_owned()]),
                ("Target", vec!["tr".to_owned()]),
                ("Rule", vec![])
            ]
        );
        for crd in &crds {
            assert_eq!(crd.spec.group, "l7mp.io");
            assert_eq!(crd.spec.scope, "Namespaced");
            let v1 = &crd.spec.versions[0];
            assert_eq!(v1.name, "v1");
            assert!(v1.served && v1.storage);
            assert!(
                v1.subresources.as_ref().unwrap().status.is_some(),
                "status subresource"
            );
            assert!(!v1.additional_printer_columns.as_ref().unwrap().is_empty());
        }
        // The proxy's own objects are kept as written: structural schemas that say so.
        let schema = serde_json::to_value(&crds[0].spec.versions[0].schema).unwrap();
        let listener_spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["listener"]
            ["properties"]["spec"];
        assert_eq!(
            listener_spec["x-kubernetes-preserve-unknown-fields"], true,
            "{listener_spec}"
        );
    }

    #[test]
    fn the_original_operators_format_parses() {
        let vsvc: VirtualService = serde_yaml::from_str(
            "apiVersion: l7mp.io/v1\nkind: VirtualService\nmetadata: {name: rtp, namespace: default}\nspec:\n  selector:\n    matchLabels: {app: l7mp-ingress}\n  listener:\n    spec:\n      UDP: {port: 10000}\n    rules:\n      - action:\n          route:\n            destinationRef: /l7mp.io/v1/Target/default/rtp-target\n",
        )
        .unwrap();
        assert_eq!(vsvc.spec.selector.match_labels["app"], "l7mp-ingress");
        assert_eq!(vsvc.spec.listener.spec["UDP"]["port"], 10000);
        let target: Target = serde_yaml::from_str(
            "apiVersion: l7mp.io/v1\nkind: Target\nmetadata: {name: rtp-target}\nspec:\n  selector:\n    matchLabels: {app: l7mp-ingress}\n  cluster:\n    spec:\n      UDP: {port: 19000}\n    endpoints:\n      - selector:\n          matchLabels: {app: net-debug}\n",
        )
        .unwrap();
        let endpoint = &target.spec.cluster.endpoints[0];
        assert_eq!(
            endpoint.selector.as_ref().unwrap().match_labels["app"],
            "net-debug"
        );
    }
}
