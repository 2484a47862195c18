//! The API's OpenAPI 3.1 document, served at `/api/v1/openapi.json` and
//! `/api/v1/openapi.yaml`.
//!
//! The schemas are generated (utoipa) from the types the handlers serialize: the
//! object views of [`crate::model::view`], the session view, the plugin views and the
//! status and error bodies. The paths are one table below, the router's twin: a route
//! added there without its row here is caught by the conformance run (schemathesis,
//! in `.ci/run`), which checks every answer against this document.

use std::sync::OnceLock;

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    RefOr, Required, ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use super::body::{ErrorBody, StatusBody};
use super::handlers::{AdminView, ConfigView};
use crate::model::Admin;
use crate::model::view::*;
use crate::plugin::PluginView;
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
const ERRORS: [(&str, &str); 8] = [
    ("400", "The body, a query parameter or a path is malformed."),
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
        .paths(paths())
        .components(Some(components()))
        .build()
}

fn components() -> utoipa::openapi::Components {
    let mut schemas = Vec::new();
    fn add<T: ToSchema>(all: &mut Vec<(String, RefOr<Schema>)>) {
        all.push((T::name().into_owned(), T::schema()));
        T::schemas(all);
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
    ComponentsBuilder::new().schemas_from_iter(schemas).build()
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
    id: &'static str,
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

fn paths() -> utoipa::openapi::Paths {
    use HttpMethod::{Delete, Get, Post, Put};
    const RECURSIVE_GET: Param = Param::Flag(
        "recursive",
        "Inline the objects that are referred to by name.",
    );
    const RECURSIVE_DELETE: Param = Param::Flag(
        "recursive",
        "Also delete what was written inline in the object, and end the sessions that use it.",
    );
    const NAME: Param = Param::Path("name", "The object's name.");
    let status = || answer("OK", schema_ref("StatusBody"), JSON);
    let body_of = |key: &str, view: &str| Some((wrapped(key, schema_ref(view)), &BODY_TYPES[..]));

    let mut table: Vec<(&str, HttpMethod, Op)> = vec![
        (
            "/api/v1/config",
            Get,
            Op {
                id: "getConfig",
                summary: "The whole configuration, with the running sessions.",
                params: vec![Param::Format],
                body: None,
                ok: answer("The configuration.", schema_ref("ConfigView"), READ_AS),
            },
        ),
        (
            "/api/v1/config",
            Post,
            Op {
                id: "loadConfig",
                summary: "Replace the whole configuration (listeners that stay the same keep their sockets and sessions).",
                params: vec![],
                body: Some((config_document(), &BODY_TYPES[..])),
                ok: status(),
            },
        ),
        (
            "/api/v1/admin",
            Get,
            Op {
                id: "getAdmin",
                summary: "The admin settings and the proxy's state.",
                params: vec![Param::Format],
                body: None,
                ok: answer("The settings.", schema_ref("AdminView"), READ_AS),
            },
        ),
        (
            "/api/v1/admin",
            Post,
            Op {
                id: "setAdmin",
                summary: "Change admin settings (the keys given; the read-only ones GET adds are ignored).",
                params: vec![],
                body: body_of("admin", "Admin"),
                ok: status(),
            },
        ),
        (
            "/api/v1/sessions",
            Get,
            Op {
                id: "listSessions",
                summary: "The running sessions (and ended ones a listener's options.track keeps).",
                params: vec![Param::Format],
                body: None,
                ok: answer(
                    "The sessions.",
                    array_of(schema_ref("SessionView")),
                    READ_AS,
                ),
            },
        ),
        (
            "/api/v1/sessions/{name}",
            Get,
            Op {
                id: "getSession",
                summary: "One session.",
                params: vec![Param::Path("name", "The session's name."), Param::Format],
                body: None,
                ok: answer("The session.", schema_ref("SessionView"), READ_AS),
            },
        ),
        (
            "/api/v1/sessions/{name}",
            Delete,
            Op {
                id: "deleteSession",
                summary: "End a session (or forget an ended one).",
                params: vec![Param::Path("name", "The session's name.")],
                body: None,
                ok: status(),
            },
        ),
        (
            "/api/v1/clusters/{name}/endpoints",
            Get,
            Op {
                id: "listClusterEndpoints",
                summary: "A cluster's endpoints (a virtual cluster's one <VIRTUAL> endpoint).",
                params: vec![Param::Path("name", "The cluster's name."), Param::Format],
                body: None,
                ok: answer(
                    "The endpoints.",
                    array_of(schema_ref("EndpointView")),
                    READ_AS,
                ),
            },
        ),
        (
            "/api/v1/clusters/{name}/endpoints",
            Post,
            Op {
                id: "addClusterEndpoint",
                summary: "Add an endpoint to a cluster.",
                params: vec![Param::Path("name", "The cluster's name.")],
                body: body_of("endpoint", "EndpointView"),
                ok: status(),
            },
        ),
        (
            "/api/v1/rulelists/{name}/rules/{position}",
            Get,
            Op {
                id: "getRuleAt",
                summary: "The rule at a position of a rulelist.",
                params: vec![
                    Param::Path("name", "The rulelist's name."),
                    POSITION,
                    RECURSIVE_GET,
                    Param::Format,
                ],
                body: None,
                ok: answer("The rule.", schema_ref("RuleView"), READ_AS),
            },
        ),
        (
            "/api/v1/rulelists/{name}/rules/{position}",
            Post,
            Op {
                id: "insertRuleAt",
                summary: "Insert a rule (an object, or the name of an existing rule) at a position.",
                params: vec![Param::Path("name", "The rulelist's name."), POSITION],
                body: Some((
                    wrapped(
                        "rule",
                        OneOfBuilder::new()
                            .item(schema_ref("RuleView"))
                            .item(String::schema())
                            .into(),
                    ),
                    &BODY_TYPES[..],
                )),
                ok: status(),
            },
        ),
        (
            "/api/v1/rulelists/{name}/rules/{position}",
            Delete,
            Op {
                id: "deleteRuleAt",
                summary: "Remove the rule at a position (recursive: delete the rule too).",
                params: vec![
                    Param::Path("name", "The rulelist's name."),
                    POSITION,
                    RECURSIVE_DELETE,
                ],
                body: None,
                ok: status(),
            },
        ),
    ];
    for (collection, singular, view, list_id, add_id, get_id, put_id, delete_id) in KINDS {
        let item = format!("/api/v1/{collection}/{{name}}");
        let list = format!("/api/v1/{collection}");
        table.push((
            leak(list.clone()),
            Get,
            Op {
                id: list_id,
                summary: "Every object of the kind, in creation order.",
                params: vec![RECURSIVE_GET, Param::Format],
                body: None,
                ok: answer("The objects.", array_of(schema_ref(view)), READ_AS),
            },
        ));
        table.push((
            leak(list),
            Post,
            Op {
                id: add_id,
                summary: "Add an object (with what it has inline).",
                params: vec![],
                body: body_of(singular, view),
                ok: status(),
            },
        ));
        table.push((
            leak(item.clone()),
            Get,
            Op {
                id: get_id,
                summary: "One object.",
                params: vec![NAME, RECURSIVE_GET, Param::Format],
                body: None,
                ok: answer("The object.", schema_ref(view), READ_AS),
            },
        ));
        table.push((leak(item.clone()), Put, Op {
            id: put_id,
            summary: "Replace an object in place (an addition): running sessions keep what they copied.",
            params: vec![NAME],
            body: body_of(singular, view),
            ok: status(),
        }));
        table.push((
            leak(item),
            Delete,
            Op {
                id: delete_id,
                summary: "Delete an object.",
                params: vec![NAME, RECURSIVE_DELETE],
                body: None,
                ok: status(),
            },
        ));
    }
    table.extend(plugin_paths());
    table.extend([
        ("/api/v1/metrics", Get, metrics_op("getMetrics")),
        ("/metrics", Get, metrics_op("getRootMetrics")),
        (
            "/api/v1/openapi.json",
            Get,
            Op {
                id: "getOpenApiJson",
                summary: "This document.",
                params: vec![],
                body: None,
                ok: answer(
                    "The OpenAPI 3.1 document.",
                    ObjectBuilder::new().into(),
                    JSON,
                ),
            },
        ),
        (
            "/api/v1/openapi.yaml",
            Get,
            Op {
                id: "getOpenApiYaml",
                summary: "This document, as YAML.",
                params: vec![],
                body: None,
                ok: answer(
                    "The OpenAPI 3.1 document.",
                    ObjectBuilder::new().into(),
                    &["application/yaml"],
                ),
            },
        ),
    ]);
    let mut paths = PathsBuilder::new();
    for (path, method, op) in table {
        paths = paths.path(path, PathItem::new(method, operation(op)));
    }
    paths.build()
}

const POSITION: Param = Param::Path(
    "position",
    "An index (0 is the first rule), or a rule's name.",
);

/// (collection, wrapper key, view schema, and the operation ids: list, add, get, put, delete).
type KindRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);
const KINDS: [KindRow; 6] = [
    (
        "listeners",
        "listener",
        "ListenerView",
        "listListeners",
        "addListener",
        "getListener",
        "putListener",
        "deleteListener",
    ),
    (
        "clusters",
        "cluster",
        "ClusterView",
        "listClusters",
        "addCluster",
        "getCluster",
        "putCluster",
        "deleteCluster",
    ),
    (
        "endpoints",
        "endpoint",
        "EndpointView",
        "listEndpoints",
        "addEndpoint",
        "getEndpoint",
        "putEndpoint",
        "deleteEndpoint",
    ),
    (
        "rulelists",
        "rulelist",
        "RuleListView",
        "listRuleLists",
        "addRuleList",
        "getRuleList",
        "putRuleList",
        "deleteRuleList",
    ),
    (
        "rules",
        "rule",
        "RuleView",
        "listRules",
        "addRule",
        "getRule",
        "putRule",
        "deleteRule",
    ),
    (
        "routes",
        "route",
        "RouteView",
        "listRoutes",
        "addRoute",
        "getRoute",
        "putRoute",
        "deleteRoute",
    ),
];

/// Paths are built once per process, for the one document: leaking them is bounded.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn metrics_op(id: &'static str) -> Op {
    Op {
        id,
        summary: "Prometheus metrics.",
        params: vec![],
        body: None,
        ok: answer(
            "The Prometheus text exposition.",
            String::schema(),
            &["text/plain"],
        ),
    }
}

/// A config document as `POST /config` and `-c` take it.
fn config_document() -> RefOr<Schema> {
    let mut doc = ObjectBuilder::new()
        .property("admin", schema_ref("Admin"))
        .property(
            "plugins",
            array_of(
                ObjectBuilder::new()
                    .property("name", String::schema())
                    .property("version", String::schema())
                    .property("path", String::schema())
                    .required("name")
                    .required("path")
                    .into(),
            ),
        );
    for (collection, _, view, ..) in KINDS {
        doc = doc.property(collection, array_of(schema_ref(view)));
    }
    doc.property("sessions", array_of(schema_ref("SessionView")))
        .build()
        .into()
}

fn plugin_paths() -> Vec<(&'static str, HttpMethod, Op)> {
    use HttpMethod::{Delete, Get, Post, Put};
    const NAME: Param = Param::Path("name", "The plugin's name.");
    const VERSION: Param = Param::Query("version", "The version being uploaded.");
    let plugin = || answer("The plugin.", schema_ref("PluginView"), READ_AS);
    let uploaded = || {
        Answer(
            "201",
            "The plugin, with the new version current.",
            schema_ref("PluginView"),
            READ_AS,
        )
    };
    let component = || {
        Some((
            RefOr::from(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::Custom("binary".into())))
                    .build(),
            ),
            WASM,
        ))
    };
    vec![
        (
            "/api/v1/plugins",
            Get,
            Op {
                id: "listPlugins",
                summary: "Every plugin with its versions.",
                params: vec![Param::Format],
                body: None,
                ok: answer("The plugins.", array_of(schema_ref("PluginView")), READ_AS),
            },
        ),
        (
            "/api/v1/plugins",
            Post,
            Op {
                id: "uploadPlugin",
                summary: "Upload a Wasm component: a new plugin, or a new version of one (a hot swap).",
                params: vec![Param::Query("name", "The plugin's name."), VERSION],
                body: component(),
                ok: uploaded(),
            },
        ),
        (
            "/api/v1/plugins/{name}",
            Get,
            Op {
                id: "getPlugin",
                summary: "One plugin with its versions.",
                params: vec![NAME, Param::Format],
                body: None,
                ok: plugin(),
            },
        ),
        (
            "/api/v1/plugins/{name}",
            Put,
            Op {
                id: "putPlugin",
                summary: "Upload a version of the plugin named in the path.",
                params: vec![NAME, VERSION],
                body: component(),
                ok: uploaded(),
            },
        ),
        (
            "/api/v1/plugins/{name}",
            Delete,
            Op {
                id: "deletePlugin",
                summary: "Delete a plugin (refused while used, unless drain or recursive).",
                params: vec![
                    NAME,
                    Param::Flag(
                        "drain",
                        "Let sessions on the plugin finish on the version they have.",
                    ),
                    Param::Flag(
                        "recursive",
                        "Delete the objects that use the plugin, and end their sessions.",
                    ),
                ],
                body: None,
                ok: answer("OK", schema_ref("StatusBody"), JSON),
            },
        ),
        (
            "/api/v1/plugins/{name}/rollback",
            Post,
            Op {
                id: "rollbackPlugin",
                summary: "Make an earlier version current (the previous one, or the one named).",
                params: vec![
                    NAME,
                    Param::OptionalQuery("version", "The version to go back to."),
                ],
                body: None,
                ok: plugin(),
            },
        ),
    ]
}
