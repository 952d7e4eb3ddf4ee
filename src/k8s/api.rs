//! Custom resource definitions, generated from the domain types so the CRD schema and the
//! file format can never drift apart.

use crate::config;
use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of the `Route` custom resource: the domain's [`config::RouteSpec`], as is.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    status = "ObjectStatus",
    shortname = "rt",
    category = "portcullis",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct RouteResource {
    #[serde(flatten)]
    pub spec: config::RouteSpec,
}

/// The spec of the `Policy` custom resource: the domain's [`config::PolicySpec`].
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "Policy",
    namespaced,
    status = "ObjectStatus",
    shortname = "pol",
    category = "portcullis",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct PolicyResource {
    #[serde(flatten)]
    pub spec: config::PolicySpec,
}

/// The spec of the `BFF` custom resource: the domain's [`config::BffSpec`].
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "BFF",
    plural = "bffs",
    namespaced,
    status = "ObjectStatus",
    category = "portcullis",
    printcolumn = r#"{"name":"Client","type":"string","jsonPath":".spec.client"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct BffResource {
    #[serde(flatten)]
    pub spec: config::BffSpec,
}

/// Status of every Portcullis object: `Accepted`, `ResolvedRefs` and `Programmed`
/// conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Every CustomResourceDefinition the gateway reads, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Route::crd(), Policy::crd(), BFF::crd()]
}

/// The CRDs as one multi-document YAML text, as `portcullis crds` prints it.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_norway::to_string(crd).expect("a CRD serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}
