//! The API's OpenAPI 3.1 document, served at `/api/v1/openapi.json` and
//! `/api/v1/openapi.yaml`.
//!
//! The schemas are generated (utoipa) from the types the handlers serialize: the
//! object views of [`crate::model::view`], the session view, the plugin views and the
//! status and error bodies. The paths are one table (`paths.rs`), the router's twin: a route
//! added there without its row here is caught by the conformance run (schemathesis,
//! in `.ci/run`), which checks every answer against this document.

use std::sync::OnceLock;

use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

mod paths;

use super::body::{ErrorBody, StatusBody};
use super::handlers::{AdminView, ConfigView};
use crate::core::build::{Protocol, Protocols, SchemaFn};
use crate::model::Admin;
use crate::model::view::*;
use crate::plugin::PluginView;
use crate::registry::REGISTRY;
use crate::session::view::SessionView;

/// The media types a JSON or YAML body may come in (see `body::media_type`).
const BODY_TYPES: [&str; 8] = [
    "application/json",
    "application/x-json",
    "text/json",
    "text/x-json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
];

/// The errors any operation may answer, each as an [`ErrorBody`].
const ERRORS: [(&str, &str); 10] = [
    ("400", "The body, a query parameter or a path is malformed."),
    (
        "401",
        "admin.auth lists tokens and the request has no valid bearer token.",
    ),
    (
        "403",
        "The token's role may not do this, the object would reach the host without the \
         admin role, or Host or Origin does not name this API.",
    ),
    (
        "404",
        "No object, session, plugin or position by that name.",
    ),
    (
        "408",
        "The body did not arrive within admin.http.body_timeout.",
    ),
    ("409", "The object exists already, or is in use."),
    ("413", "The body is larger than admin.http.max_body."),
    ("415", "The body's Content-Type is not one the API reads."),
    (
        "422",
        "The object is not valid: the message names the field.",
    ),
    (
        "503",
        "The API serves admin.http.max_connections connections already.",
    ),
];

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("l7mp")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The l7mp REST API: the original l7mp's objects, paths and shapes, plus \
                     PUT, POST /config, plugins and the additions marked in the schemas. \
                     Bodies may also be sent unwrapped (the object without its \
                     {\"<kind>\": ...} wrapper).",
                )),
        )
        .paths(paths::paths())
        .components(Some(components()))
        .build()
}

fn components() -> utoipa::openapi::Components {
    let mut schemas = Vec::new();
    fn add<T: ToSchema>(all: &mut Vec<(String, RefOr<Schema>)>) {
        let own = crate::core::build::schema::<T>(all);
        all.push((T::name().into_owned(), own));
    }
    add::<ErrorBody>(&mut schemas);
    add::<StatusBody>(&mut schemas);
    add::<AdminView>(&mut schemas);
    add::<Admin>(&mut schemas);
    add::<ConfigView>(&mut schemas);
    add::<ListenerView>(&mut schemas);
    add::<ClusterView>(&mut schemas);
    add::<EndpointView>(&mut schemas);
    add::<RuleListView>(&mut schemas);
    add::<RuleView>(&mut schemas);
    add::<RouteView>(&mut schemas);
    add::<SessionView>(&mut schemas);
    add::<PluginView>(&mut schemas);
    protocol_specs(&mut schemas);
    ComponentsBuilder::new().schemas_from_iter(schemas).build()
}

/// Each protocol's spec as its file declares it (`TCPListenerSpec`: `protocol` and the
/// settings of the type that parses it), and `ListenerSpec` / `ClusterSpec`, one of
/// them. Listings show specs as written (unknown fields, any spelling of `protocol`),
/// so the object views keep `spec` open; these say what each protocol reads.
fn protocol_specs(all: &mut Vec<(String, RefOr<Schema>)>) {
    type Pick = fn(&Protocol) -> Option<SchemaFn>;
    let kinds: [(&str, Pick); 2] = [
        ("Listener", |p| p.listener_schema),
        ("Cluster", |p| p.cluster_schema),
    ];
    for (kind, pick) in kinds {
        let mut one_of = OneOfBuilder::new();
        for p in REGISTRY.all() {
            let Some(own) = pick(p) else { continue };
            let own = own(all);
            let names: Vec<&str> = std::iter::once(p.name)
                .chain(p.aliases.iter().copied())
                .collect();
            let protocol = ObjectBuilder::new()
                .property(
                    "protocol",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(names))
                        .description(Some("Matched case-insensitively.")),
                )
                .required("protocol");
            let name = format!("{}{kind}Spec", p.name);
            all.push((
                name.clone(),
                AllOfBuilder::new().item(protocol).item(own).into(),
            ));
            one_of = one_of.item(schema_ref(&name));
        }
        all.push((format!("{kind}Spec"), one_of.into()));
    }
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn array_of(item: RefOr<Schema>) -> RefOr<Schema> {
    ArrayBuilder::new().items(item).build().into()
}

/// `{<key>: <schema>}`, the original's request wrapper.
fn wrapped(key: &str, inner: RefOr<Schema>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .property(key, inner)
        .required(key)
        .build()
        .into()
}

/// One operation: its parameters, body (schema and media types) and success answer.
struct Op {
    id: String,
    summary: &'static str,
    params: Vec<Param>,
    body: Option<(RefOr<Schema>, &'static [&'static str])>,
    ok: Answer,
}

/// A success answer: status code, description, schema, media types.
struct Answer(
    &'static str,
    &'static str,
    RefOr<Schema>,
    &'static [&'static str],
);

fn answer(
    description: &'static str,
    schema: RefOr<Schema>,
    types: &'static [&'static str],
) -> Answer {
    Answer("200", description, schema, types)
}

#[derive(Clone, Copy)]
enum Param {
    /// A path segment.
    Path(&'static str, &'static str),
    /// `recursive`, `drain`: booleans.
    Flag(&'static str, &'static str),
    /// `format`: the answer's layout.
    Format,
    /// A required string in the query (plugin uploads).
    Query(&'static str, &'static str),
    /// An optional one.
    OptionalQuery(&'static str, &'static str),
}

const READ_AS: &[&str] = &["application/json", "application/yaml"];
const JSON: &[&str] = &["application/json"];
const WASM: &[&str] = &["application/wasm", "application/octet-stream"];

fn parameter(p: Param) -> utoipa::openapi::path::Parameter {
    let string = String::schema;
    let (name, location, required, description, schema): (_, _, _, _, RefOr<Schema>) = match p {
        Param::Path(name, d) => (name, ParameterIn::Path, true, d, string()),
        Param::Flag(name, d) => (name, ParameterIn::Query, false, d, bool::schema()),
        Param::Format => (
            "format",
            ParameterIn::Query,
            false,
            "The answer's layout: json (the original's plain, terse, space, lines and \
             diffy answer JSON too) or yaml.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([
                    "json", "yaml", "plain", "terse", "space", "lines", "diffy",
                ]))
                .build()
                .into(),
        ),
        Param::Query(name, d) => (name, ParameterIn::Query, true, d, string()),
        Param::OptionalQuery(name, d) => (name, ParameterIn::Query, false, d, string()),
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn operation(op: Op) -> utoipa::openapi::path::Operation {
    let content =
        |schema: &RefOr<Schema>| ContentBuilder::new().schema(Some(schema.clone())).build();
    let Answer(code, description, schema, types) = op.ok;
    let mut ok = ResponseBuilder::new().description(description);
    for t in types {
        ok = ok.content(*t, content(&schema));
    }
    let mut b = OperationBuilder::new()
        .operation_id(Some(op.id))
        .summary(Some(op.summary))
        .response(code, ok.build());
    for p in op.params {
        b = b.parameter(parameter(p));
    }
    if let Some((schema, types)) = op.body {
        let mut body = RequestBodyBuilder::new().required(Some(Required::True));
        for t in types {
            body = body.content(*t, content(&schema));
        }
        b = b.request_body(Some(body.build()));
    }
    for (code, description) in ERRORS {
        b = b.response(
            code,
            ResponseBuilder::new()
                .description(description)
                .content("application/json", content(&schema_ref("ErrorBody")))
                .build(),
        );
    }
    b.build()
}
