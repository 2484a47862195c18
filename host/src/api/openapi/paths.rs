//! The paths of the OpenAPI document: one row per operation, the router's twin.

use utoipa::PartialSchema;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use super::*;

pub(super) fn paths() -> utoipa::openapi::Paths {
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
                id: "getConfig".into(),
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
                id: "loadConfig".into(),
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
                id: "getAdmin".into(),
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
                id: "setAdmin".into(),
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
                id: "listSessions".into(),
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
                id: "getSession".into(),
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
                id: "deleteSession".into(),
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
                id: "listClusterEndpoints".into(),
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
                id: "addClusterEndpoint".into(),
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
                id: "getRuleAt".into(),
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
                id: "insertRuleAt".into(),
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
                id: "deleteRuleAt".into(),
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
    let mut paths = utoipa::openapi::Paths::new();
    for (collection, key, view, title) in KINDS {
        let list = format!("/api/v1/{collection}");
        let item = format!("/api/v1/{collection}/{{name}}");
        let ops = [
            (
                &list,
                Get,
                Op {
                    id: format!("list{title}s"),
                    summary: "Every object of the kind, in creation order.",
                    params: vec![RECURSIVE_GET, Param::Format],
                    body: None,
                    ok: answer("The objects.", array_of(schema_ref(view)), READ_AS),
                },
            ),
            (
                &list,
                Post,
                Op {
                    id: format!("add{title}"),
                    summary: "Add an object (with what it has inline).",
                    params: vec![],
                    body: body_of(key, view),
                    ok: status(),
                },
            ),
            (
                &item,
                Get,
                Op {
                    id: format!("get{title}"),
                    summary: "One object.",
                    params: vec![NAME, RECURSIVE_GET, Param::Format],
                    body: None,
                    ok: answer("The object.", schema_ref(view), READ_AS),
                },
            ),
            (
                &item,
                Put,
                Op {
                    id: format!("put{title}"),
                    summary: "Replace an object in place (an addition): running sessions keep what they copied.",
                    params: vec![NAME],
                    body: body_of(key, view),
                    ok: status(),
                },
            ),
            (
                &item,
                Delete,
                Op {
                    id: format!("delete{title}"),
                    summary: "Delete an object.",
                    params: vec![NAME, RECURSIVE_DELETE],
                    body: None,
                    ok: status(),
                },
            ),
        ];
        for (path, method, op) in ops {
            paths.add_path_operation(path, vec![method], operation(op));
        }
    }
    table.extend(plugin_paths());
    table.extend([
        ("/api/v1/metrics", Get, metrics_op("getMetrics")),
        ("/metrics", Get, metrics_op("getRootMetrics")),
        (
            "/api/v1/openapi.json",
            Get,
            Op {
                id: "getOpenApiJson".into(),
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
                id: "getOpenApiYaml".into(),
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
    for (path, method, op) in table {
        paths.add_path_operation(path, vec![method], operation(op));
    }
    paths
}

const POSITION: Param = Param::Path(
    "position",
    "An index (0 is the first rule), or a rule's name.",
);

/// Each kind's collection, the key that wraps its bodies, its view schema, and the
/// name its operation ids use (`listListeners`, `addListener`, ...).
const KINDS: [(&str, &str, &str, &str); 6] = [
    ("listeners", "listener", "ListenerView", "Listener"),
    ("clusters", "cluster", "ClusterView", "Cluster"),
    ("endpoints", "endpoint", "EndpointView", "Endpoint"),
    ("rulelists", "rulelist", "RuleListView", "RuleList"),
    ("rules", "rule", "RuleView", "Rule"),
    ("routes", "route", "RouteView", "Route"),
];

fn metrics_op(id: &str) -> Op {
    Op {
        id: id.into(),
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
                id: "listPlugins".into(),
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
                id: "uploadPlugin".into(),
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
                id: "getPlugin".into(),
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
                id: "putPlugin".into(),
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
                id: "deletePlugin".into(),
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
                id: "rollbackPlugin".into(),
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
