//! GraphQL for the fake, on `apollo-compiler`: every request is parsed and validated against
//! Buildkite's published schema (`schema/buildkite.graphql`, vendored unchanged), so the fake
//! rejects exactly what Buildkite's schema rejects, and executed by apollo-compiler's executor,
//! which asks a [`Resolver`] for one field at a time. A field the schema has but the fake does
//! not serve is a field error (`null` there, an `errors` entry with its `path`).
//!
//! Introspection (`__schema`, `__type`) is not served; `__typename` is. Mutations and
//! subscriptions validate (the schema has them) but are answered with a request error.

use std::sync::OnceLock;

use apollo_compiler::resolvers::{Execution, FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use apollo_compiler::response::{GraphQLError, JsonMap};
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use serde_json::{Map, Value as Json};

/// Buildkite's published GraphQL schema, as downloaded.
pub const BUILDKITE_SCHEMA: &str = include_str!("../schema/buildkite.graphql");

/// The parsed and validated [`BUILDKITE_SCHEMA`].
pub fn schema() -> &'static Valid<Schema> {
    static SCHEMA: OnceLock<Valid<Schema>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::parse_and_validate(BUILDKITE_SCHEMA, "buildkite.graphql")
            .unwrap_or_else(|e| panic!("Buildkite's published schema does not validate: {e}"))
    })
}

/// A field's arguments after coercion (defaults applied, variables substituted).
#[derive(Debug, Default)]
pub struct Args(Map<String, Json>);

impl Args {
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.0.get(name).filter(|v| !v.is_null())
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Json::as_i64)
    }
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Json::as_str)
    }
    /// A list of strings (a single string counts as a list of one).
    pub fn strs(&self, name: &str) -> Option<Vec<String>> {
        match self.get(name)? {
            Json::Array(items) => Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            Json::String(s) => Some(vec![s.clone()]),
            _ => None,
        }
    }
}

/// What a resolver answers for one field.
pub enum Out<O> {
    Null,
    Leaf(Json),
    Object(O),
    List(Vec<Out<O>>),
}

/// The fake's side of execution: the object type of a value, and one field of it.
pub trait Resolver {
    type Obj: Clone;
    fn type_of(&self, obj: &Self::Obj) -> &'static str;
    fn resolve(&self, obj: &Self::Obj, field: &str, args: &Args) -> Result<Out<Self::Obj>, String>;
}

/// The response body (`{"data": .., "errors": [..]}`, keys in selection order) and whether
/// it carries errors.
pub struct Response {
    pub body: String,
    pub has_errors: bool,
}

/// Parses, validates and executes `query` (operation `operation`, `variables`) from `root`.
pub fn run<R: Resolver>(
    query: &str,
    operation: Option<&str>,
    variables: &Map<String, Json>,
    resolver: &R,
    root: R::Obj,
) -> Response {
    let schema = schema();
    let doc = match ExecutableDocument::parse_and_validate(schema, query, "query.graphql") {
        Ok(doc) => doc,
        Err(with) => {
            let errors = with.errors.iter().map(|d| d.to_json()).collect();
            return request_errors(errors);
        }
    };
    let vars: JsonMap = match serde_json::from_value(Json::Object(variables.clone())) {
        Ok(v) => v,
        Err(e) => {
            return request_errors(vec![GraphQLError::new(e.to_string(), None, &doc.sources)])
        }
    };
    let exec = match Execution::new(schema, &doc).operation_name(operation) {
        Ok(exec) => exec,
        Err(e) => return request_errors(vec![e.to_graphql_error(&doc.sources)]),
    };
    if let Ok(op) = doc.operations.get(operation) {
        if !op.is_query() {
            let msg = format!(
                "The fake serves queries only, not a {}",
                op.operation_type.name()
            );
            return request_errors(vec![GraphQLError::new(msg, None, &doc.sources)]);
        }
    }
    let root = Node {
        r: resolver,
        obj: root,
    };
    match exec.raw_variable_values(&vars).execute_sync(&root) {
        Ok(mut resp) => {
            // apollo-compiler prefixes a resolver's message; Buildkite answers it as it is.
            for e in &mut resp.errors {
                if let Some(m) = e.message.strip_prefix("resolver error: ") {
                    e.message = m.to_string();
                }
            }
            let has_errors = !resp.errors.is_empty();
            let body = serde_json::to_string(&resp).unwrap_or_default();
            Response { body, has_errors }
        }
        Err(e) => request_errors(vec![e.to_graphql_error(&doc.sources)]),
    }
}

/// `{"data": null, "errors": [..]}`: the request failed before execution.
fn request_errors(errors: Vec<GraphQLError>) -> Response {
    let errors = serde_json::to_value(errors).unwrap_or(Json::Null);
    Response {
        body: serde_json::json!({"data": null, "errors": errors}).to_string(),
        has_errors: true,
    }
}

/// A value of the resolver's, as apollo-compiler's executor sees objects.
struct Node<'r, R: Resolver> {
    r: &'r R,
    obj: R::Obj,
}

impl<R: Resolver> ObjectValue for Node<'_, R> {
    fn type_name(&self) -> &str {
        self.r.type_of(&self.obj)
    }

    fn resolve_field<'a>(
        &'a self,
        info: &'a ResolveInfo<'a>,
    ) -> Result<ResolvedValue<'a>, FieldError> {
        let args = match serde_json::to_value(info.arguments()) {
            Ok(Json::Object(m)) => Args(m),
            _ => Args::default(),
        };
        match self.r.resolve(&self.obj, info.field_name(), &args) {
            Ok(out) => Ok(self.value(out)),
            Err(message) => Err(FieldError { message }),
        }
    }
}

impl<'r, R: Resolver> Node<'r, R> {
    fn value<'a>(&'a self, out: Out<R::Obj>) -> ResolvedValue<'a> {
        match out {
            Out::Null => ResolvedValue::null(),
            Out::Leaf(v) => ResolvedValue::leaf(serde_json_bytes::Value::from(v)),
            Out::Object(obj) => ResolvedValue::object(Node { r: self.r, obj }),
            Out::List(items) => {
                ResolvedValue::List(Box::new(items.into_iter().map(move |o| Ok(self.value(o)))))
            }
        }
    }
}
