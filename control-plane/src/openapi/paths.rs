//! The REST paths of the served resources and their operations, rendered for Swagger 2.0 or
//! OpenAPI 3.0.
//!
//! Clients read more than documentation here: `kubectl apply` finds a kind's PATCH operation by its
//! `x-kubernetes-group-version-kind`, checks that it accepts `application/strategic-merge-patch+json`
//! and that it takes a `fieldValidation` query parameter; `kubectl explain` finds a resource's kind
//! from the operations of `…/<plural>` and `…/<plural>/{name}`.

use serde_json::{Map, Value, json};

use super::definitions::{self, DELETE_OPTIONS, PATCH, REF_V2, REF_V3, STATUS};
use super::kinds::KindType;
use crate::registry::Resource;

/// A query parameter.
struct Query {
    name: &'static str,
    kind: &'static str,
    description: &'static str,
}

const fn query(name: &'static str, kind: &'static str, description: &'static str) -> Query {
    Query { name, kind, description }
}

const PRETTY: Query = query("pretty", "string", "If 'true', the output is pretty printed.");
const DRY_RUN: Query = query(
    "dryRun",
    "string",
    "When present, modifications are not persisted. The only valid value is 'All': process every stage of the request without storing the result.",
);
const FIELD_MANAGER: Query =
    query("fieldManager", "string", "The name of the actor making the change, recorded in managedFields.");
const FIELD_VALIDATION: Query = query(
    "fieldValidation",
    "string",
    "How to treat unknown or duplicate fields in the request body: Ignore, Warn (the default) or Strict.",
);
const FORCE: Query =
    query("force", "boolean", "Apply requests only: take ownership of fields other managers own instead of failing.");
const GRACE_PERIOD: Query =
    query("gracePeriodSeconds", "integer", "Seconds to wait before deleting the object; zero means immediately.");
const ORPHAN: Query = query(
    "orphanDependents",
    "boolean",
    "Deprecated, use propagationPolicy: whether to orphan the dependent objects instead of deleting them.",
);
const PROPAGATION: Query = query(
    "propagationPolicy",
    "string",
    "Whether and how garbage collection deletes dependents: Orphan, Background or Foreground.",
);
const LIST: &[Query] = &[
    query("allowWatchBookmarks", "boolean", "Asks a watch to send BOOKMARK events."),
    query("continue", "string", "The continue token of the previous page of a paged list."),
    query("fieldSelector", "string", "Restricts the result to objects whose fields match, e.g. metadata.name=web."),
    query("labelSelector", "string", "Restricts the result to objects whose labels match."),
    query("limit", "integer", "The most objects to return; the rest come from following the continue token."),
    query("resourceVersion", "string", "Which resource version the result must be at least as new as."),
    query("resourceVersionMatch", "string", "How resourceVersion applies: Exact or NotOlderThan."),
    query(
        "sendInitialEvents",
        "boolean",
        "With watch: start the watch with synthetic ADDED events for existing objects.",
    ),
    query("timeoutSeconds", "integer", "Ends the list or watch after this many seconds."),
    query("watch", "boolean", "Stream changes (ADDED, MODIFIED, DELETED) instead of returning a list."),
];
const CREATE: &[Query] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_QUERY: &[Query] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
const DELETE: &[Query] = &[DRY_RUN, GRACE_PERIOD, ORPHAN, PROPAGATION];

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const RESPONSE_TYPES: &[&str] = &[JSON, YAML, PROTOBUF];
const LIST_RESPONSE_TYPES: &[&str] =
    &[JSON, YAML, PROTOBUF, "application/json;stream=watch", "application/vnd.kubernetes.protobuf;stream=watch"];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Get,
    List,
    Post,
    Put,
    Patch,
    Delete,
    DeleteCollection,
}

impl Action {
    fn method(self) -> &'static str {
        match self {
            Action::Get | Action::List => "get",
            Action::Post => "post",
            Action::Put => "put",
            Action::Patch => "patch",
            Action::Delete | Action::DeleteCollection => "delete",
        }
    }
    /// The `x-kubernetes-action` value.
    fn name(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::List => "list",
            Action::Post => "post",
            Action::Put => "put",
            Action::Patch => "patch",
            Action::Delete => "delete",
            Action::DeleteCollection => "deletecollection",
        }
    }
    /// The verb that starts an operation id.
    fn verb(self) -> &'static str {
        match self {
            Action::Get => "read",
            Action::List => "list",
            Action::Post => "create",
            Action::Put => "replace",
            Action::Patch => "patch",
            Action::Delete | Action::DeleteCollection => "delete",
        }
    }
    fn queries(self) -> Vec<&'static Query> {
        match self {
            Action::Get => Vec::new(),
            Action::List => LIST.iter().collect(),
            Action::Post | Action::Put => CREATE.iter().collect(),
            Action::Patch => PATCH_QUERY.iter().collect(),
            Action::Delete => DELETE.iter().collect(),
            Action::DeleteCollection => DELETE.iter().chain(LIST).collect(),
        }
    }
}

/// What a request carries.
enum Body {
    None,
    /// An object of this definition.
    Object(String),
    Patch,
}

struct Operation {
    action: Action,
    id: String,
    description: String,
    tag: String,
    /// (group, version, kind) of the object the operation works on.
    gvk: (&'static str, &'static str, &'static str),
    body: Body,
    /// Definition name of the response body.
    response: String,
}

struct PathItem {
    path: String,
    namespaced: bool,
    named: bool,
    operations: Vec<Operation>,
}

/// `"apps"` → `"Apps"`, `"rbac.authorization.k8s.io"` → `"RbacAuthorization"`, `""` → `"Core"`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_string();
    }
    group.trim_end_matches(".k8s.io").split('.').map(capitalize).collect()
}

/// `"apps"` → `"apps_v1"`, `"rbac.authorization.k8s.io"` → `"rbacAuthorization_v1"`.
fn tag(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut chars = camel.chars();
    let first = chars.next().map(|c| c.to_ascii_lowercase()).unwrap_or_default();
    format!("{first}{}_{version}", chars.as_str())
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// The URL prefix of a group-version: `/api/v1`, `/apis/apps/v1`.
pub(super) fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") }
}

/// The object a group of operations works on: a resource's kind, or a subresource's.
struct Subject<'a> {
    resource: &'a Resource,
    gvk: (&'static str, &'static str, &'static str),
    definition: String,
    /// The list definition (for `list`), or `definition` when there is none.
    list: String,
    /// The subresource (`status`, `scale`…), or `""`.
    subresource: &'a str,
}

impl<'a> Subject<'a> {
    fn new(resource: &'a Resource, kind: &KindType, subresource: &'a str) -> Self {
        let definition = (kind.name)().into_owned();
        let list = definitions::list_name(kind).unwrap_or_else(|| definition.clone());
        Subject { resource, gvk: (kind.group, kind.version, kind.kind), definition, list, subresource }
    }

    /// One operation. `scope` is `Namespaced` or `""`; `suffix` ends the operation id.
    fn operation(&self, action: Action, scope: &str, suffix: &str) -> Operation {
        let (body, response) = match action {
            Action::List => (Body::None, self.list.clone()),
            Action::Get => (Body::None, self.definition.clone()),
            Action::Post | Action::Put => (Body::Object(self.definition.clone()), self.definition.clone()),
            Action::Patch => (Body::Patch, self.definition.clone()),
            Action::Delete | Action::DeleteCollection => (Body::Object(DELETE_OPTIONS.to_string()), STATUS.to_string()),
        };
        let r = self.resource;
        let collection = if action == Action::DeleteCollection { "Collection" } else { "" };
        let sub = capitalize(self.subresource);
        let id = format!(
            "{}{}{}{collection}{scope}{}{sub}{suffix}",
            action.verb(),
            group_camel(r.group),
            capitalize(r.version),
            r.kind
        );
        let kind = r.kind;
        let description = match (action, self.subresource) {
            (Action::List, _) => format!("list or watch objects of kind {kind}"),
            (Action::DeleteCollection, _) => format!("delete a collection of {kind} objects"),
            (Action::Post, "") => format!("create a {kind}"),
            (Action::Delete, _) => format!("delete a {kind}"),
            (Action::Post, sub) => format!("create {sub} of a {kind}"),
            (Action::Get, "") => format!("read the specified {kind}"),
            (Action::Put, "") => format!("replace the specified {kind}"),
            (Action::Patch, "") => format!("partially update the specified {kind}"),
            (Action::Get, sub) => format!("read {sub} of the specified {kind}"),
            (Action::Put, sub) => format!("replace {sub} of the specified {kind}"),
            (Action::Patch, sub) => format!("partially update {sub} of the specified {kind}"),
        };
        let tag = tag(r.group, r.version);
        Operation { action, id, description, tag, gvk: self.gvk, body, response }
    }
}

/// The paths of one resource.
fn resource_paths(resource: &Resource) -> Vec<PathItem> {
    let Some(kind) = definitions::kind_of(resource) else { return Vec::new() };
    let main = Subject::new(resource, kind, "");
    let (namespaced, scope) = (resource.namespaced, if resource.namespaced { "Namespaced" } else { "" });
    let group_version = prefix(resource.group, resource.version);
    let plural = resource.plural;
    let base = if namespaced {
        format!("{group_version}/namespaces/{{namespace}}/{plural}")
    } else {
        format!("{group_version}/{plural}")
    };
    let item = format!("{base}/{{name}}");
    let operations = |subject: &Subject, actions: &[Action]| -> Vec<Operation> {
        actions.iter().map(|action| subject.operation(*action, scope, "")).collect()
    };
    let mut paths = vec![
        PathItem {
            path: base.clone(),
            namespaced,
            named: false,
            operations: operations(&main, &[Action::List, Action::Post, Action::DeleteCollection]),
        },
        PathItem {
            path: item.clone(),
            namespaced,
            named: true,
            operations: operations(&main, &[Action::Get, Action::Put, Action::Patch, Action::Delete]),
        },
    ];
    if namespaced {
        paths.push(PathItem {
            path: format!("{group_version}/{plural}"),
            namespaced: false,
            named: false,
            operations: vec![main.operation(Action::List, "", "ForAllNamespaces")],
        });
    }
    for subresource in resource.subresources {
        let subject = match definitions::subresource_kind(subresource) {
            Some(body_kind) => Subject::new(resource, body_kind, subresource),
            None => Subject::new(resource, kind, subresource),
        };
        let actions: &[Action] = match *subresource {
            "status" | "scale" | "ephemeralcontainers" | "resize" => &[Action::Get, Action::Put, Action::Patch],
            "eviction" | "binding" => &[Action::Post],
            "finalize" => &[Action::Put],
            // Streaming subresources (log, exec, attach, portforward…) are not described.
            _ => continue,
        };
        paths.push(PathItem {
            path: format!("{item}/{subresource}"),
            namespaced,
            named: true,
            operations: operations(&subject, actions),
        });
    }
    paths
}

/// Definition names the operations of `resources` mention.
pub(super) fn referenced(resources: &[&Resource]) -> Vec<String> {
    let mut names = vec![PATCH.to_string(), STATUS.to_string(), DELETE_OPTIONS.to_string()];
    for resource in resources {
        for path in resource_paths(resource) {
            for operation in path.operations {
                names.push(operation.response);
                if let Body::Object(body) = operation.body {
                    names.push(body);
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Which document a rendering is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Spec {
    V2,
    V3,
}

impl Spec {
    fn reference(self, definition: &str) -> Value {
        let prefix = if self == Spec::V2 { REF_V2 } else { REF_V3 };
        json!({"$ref": format!("{prefix}{definition}")})
    }
}

/// The `paths` object for `resources`.
pub(super) fn render(resources: &[&Resource], spec: Spec) -> Map<String, Value> {
    let mut items: Vec<PathItem> = resources.iter().flat_map(|r| resource_paths(r)).collect();
    items.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Map::new();
    for item in items {
        let mut rendered = Map::new();
        for operation in &item.operations {
            rendered.insert(operation.action.method().to_string(), render_operation(operation, spec));
        }
        let mut parameters = Vec::new();
        if item.named {
            parameters.push(path_parameter("name", "name of the object", spec));
        }
        if item.namespaced {
            parameters.push(path_parameter(
                "namespace",
                "object name and auth scope, such as for teams and projects",
                spec,
            ));
        }
        parameters.push(query_parameter(&PRETTY, spec));
        rendered.insert("parameters".to_string(), Value::Array(parameters));
        out.insert(item.path, Value::Object(rendered));
    }
    out
}

fn path_parameter(name: &str, description: &str, spec: Spec) -> Value {
    match spec {
        Spec::V2 => {
            json!({"description": description, "in": "path", "name": name, "required": true, "type": "string", "uniqueItems": true})
        }
        Spec::V3 => {
            json!({"description": description, "in": "path", "name": name, "required": true, "schema": {"type": "string", "uniqueItems": true}})
        }
    }
}

fn query_parameter(query: &Query, spec: Spec) -> Value {
    match spec {
        Spec::V2 => {
            json!({"description": query.description, "in": "query", "name": query.name, "type": query.kind, "uniqueItems": true})
        }
        Spec::V3 => {
            json!({"description": query.description, "in": "query", "name": query.name, "schema": {"type": query.kind, "uniqueItems": true}})
        }
    }
}

fn render_operation(operation: &Operation, spec: Spec) -> Value {
    let mut out = Map::new();
    out.insert("description".to_string(), operation.description.clone().into());
    out.insert("operationId".to_string(), operation.id.clone().into());
    let mut parameters: Vec<Value> = operation.action.queries().into_iter().map(|q| query_parameter(q, spec)).collect();
    let (body_types, body_definition): (&[&str], Option<&str>) = match &operation.body {
        Body::None => (&[], None),
        Body::Object(definition) => (&["*/*"], Some(definition)),
        Body::Patch => (PATCH_TYPES, Some(PATCH)),
    };
    let response_types = if operation.action == Action::List { LIST_RESPONSE_TYPES } else { RESPONSE_TYPES };
    let codes: &[(&str, &str)] = match operation.action {
        Action::Post => &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
        Action::Put | Action::Patch => &[("200", "OK"), ("201", "Created")],
        Action::Delete => &[("200", "OK"), ("202", "Accepted")],
        Action::Get | Action::List | Action::DeleteCollection => &[("200", "OK")],
    };
    let mut responses = Map::new();
    match spec {
        Spec::V2 => {
            if let Some(definition) = body_definition {
                let required = !matches!(operation.action, Action::Delete | Action::DeleteCollection);
                parameters.insert(
                    0,
                    json!({"in": "body", "name": "body", "required": required, "schema": spec.reference(definition)}),
                );
                out.insert("consumes".to_string(), json!(body_types));
            }
            out.insert("produces".to_string(), json!(response_types));
            for (code, description) in codes {
                responses.insert(
                    code.to_string(),
                    json!({"description": description, "schema": spec.reference(&operation.response)}),
                );
            }
            out.insert("schemes".to_string(), json!(["https"]));
        }
        Spec::V3 => {
            if let Some(definition) = body_definition {
                let content: Map<String, Value> =
                    body_types.iter().map(|t| (t.to_string(), json!({"schema": spec.reference(definition)}))).collect();
                let required = !matches!(operation.action, Action::Delete | Action::DeleteCollection);
                out.insert("requestBody".to_string(), json!({"content": content, "required": required}));
            }
            for (code, description) in codes {
                let content: Map<String, Value> = response_types
                    .iter()
                    .map(|t| (t.to_string(), json!({"schema": spec.reference(&operation.response)})))
                    .collect();
                responses.insert(code.to_string(), json!({"description": description, "content": content}));
            }
        }
    }
    if !parameters.is_empty() {
        out.insert("parameters".to_string(), Value::Array(parameters));
    }
    responses.insert("401".to_string(), json!({"description": "Unauthorized"}));
    out.insert("responses".to_string(), Value::Object(responses));
    out.insert("tags".to_string(), json!([operation.tag]));
    out.insert("x-kubernetes-action".to_string(), operation.action.name().into());
    let (group, version, kind) = operation.gvk;
    out.insert(
        "x-kubernetes-group-version-kind".to_string(),
        json!({"group": group, "kind": kind, "version": version}),
    );
    Value::Object(out)
}
