//! The routes, each declared once with its documentation, and the OpenAPI 3.1 document
//! built from them and from the JSON Schemas the server validates with
//! (`schema::SOURCES`). `router()` serves exactly the routes listed here, so a route
//! cannot be served without being documented, nor documented without being served.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::Api;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A member of staff: `Authorization: Bearer <token>`.
    Staff,
    /// A payment gateway: an Ed25519 signature over the request (docs/GATEWAYS.md).
    Gateway,
    /// Anyone (health, metrics, this document).
    Anyone,
}

/// One route's documentation.
#[derive(Clone, Debug)]
pub struct Doc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// The request body's schema (`schemas/http/<name>.json`), for a write.
    pub request: Option<&'static str>,
    /// The success answer's schema; None for an answer that is not JSON.
    pub response: Option<&'static str>,
    pub caller: Caller,
    /// A write, under an `Idempotency-Key`; false for a read that takes a body (a search
    /// by personal data, which must not stand in a URL).
    pub writes: bool,
    /// More than the summary: what the route costs, its bounds, where its state lives.
    pub description: Option<&'static str>,
    /// Query parameters: (name, what it is).
    pub query: &'static [(&'static str, &'static str)],
    /// Other media types the success answer comes in (`text/csv` on `Accept`, or the
    /// only one for a download such as `application/x-tar`).
    pub media: &'static [&'static str],
    /// The write is started, not done: 202 Accepted with a `Location` to follow.
    pub accepted: bool,
}

impl Doc {
    /// A POST route's documentation: its body's schema, its answer's, and whether it
    /// writes (under an idempotency key).
    fn with_body(
        path: &'static str,
        summary: &'static str,
        request: &'static str,
        response: &'static str,
        caller: Caller,
        writes: bool,
    ) -> Self {
        Doc {
            method: "post",
            path,
            summary,
            request: Some(request),
            response: Some(response),
            caller,
            writes,
            description: None,
            query: &[],
            media: &[],
            accepted: false,
        }
    }
}

/// The routes being declared: the router and the documentation side by side.
pub struct Routes {
    pub router: Router<Api>,
    pub docs: Vec<Doc>,
}

impl Routes {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            docs: Vec::new(),
        }
    }

    fn add(mut self, route: axum::routing::MethodRouter<Api>, doc: Doc) -> Self {
        self.router = self.router.route(doc.path, route);
        self.docs.push(doc);
        self
    }

    /// A POST route, a write: an idempotency key and a body of `request`'s schema.
    pub fn post<H, T>(
        self,
        path: &'static str,
        summary: &'static str,
        request: &'static str,
        response: &'static str,
        caller: Caller,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Api>,
        T: 'static,
    {
        let doc = Doc::with_body(path, summary, request, response, caller, true);
        self.add(post(handler), doc)
    }

    /// A POST route that reads: a body of `request`'s schema, no idempotency key.
    pub fn search<H, T>(
        self,
        path: &'static str,
        summary: &'static str,
        request: &'static str,
        response: &'static str,
        caller: Caller,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Api>,
        T: 'static,
    {
        let doc = Doc::with_body(path, summary, request, response, caller, false);
        self.add(post(handler), doc)
    }

    /// A GET route answering `response`'s schema (None: not JSON).
    pub fn get<H, T>(
        self,
        path: &'static str,
        summary: &'static str,
        response: Option<&'static str>,
        caller: Caller,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Api>,
        T: 'static,
    {
        let doc = Doc {
            method: "get",
            path,
            summary,
            request: None,
            response,
            caller,
            writes: false,
            description: None,
            query: &[],
            media: &[],
            accepted: false,
        };
        self.add(get(handler), doc)
    }

    fn last(&mut self) -> &mut Doc {
        self.docs
            .last_mut()
            .expect("a route is declared before it is described")
    }

    /// Describes the route just declared beyond its summary (its cost, bounds, state).
    pub fn described(mut self, description: &'static str) -> Self {
        self.last().description = Some(description);
        self
    }

    /// The query parameters of the route just declared: (name, what it is).
    pub fn queries(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.last().query = query;
        self
    }

    /// Other media types the answer of the route just declared comes in.
    pub fn also_as(mut self, media: &'static [&'static str]) -> Self {
        self.last().media = media;
        self
    }

    /// The route just declared starts work and answers 202 Accepted with a `Location`.
    pub fn accepted(mut self) -> Self {
        self.last().accepted = true;
        self
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a schema of `schemas/http/` sits in the document.
fn component(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

/// A schema file as a component: its own references (`#/...`) point into it, those to
/// `defs.json` at the `defs` component, and the dialect is the document's own (JSON
/// Schema 2020-12).
fn as_component(name: &str, text: &str) -> Value {
    let text = text
        .replace("\"#/", &format!("\"#/components/schemas/{name}/"))
        .replace("\"defs.json#/", "\"#/components/schemas/defs/");
    let mut value: Value = serde_json::from_str(&text).expect("the schemas are JSON (tested)");
    if let Value::Object(map) = &mut value {
        map.remove("$schema");
        map.remove("$id");
    }
    value
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

/// The OpenAPI 3.1 document of every route `docs` lists.
pub fn document(docs: &[Doc]) -> Value {
    let mut schemas = Map::new();
    for (name, text) in super::schema::SOURCES {
        schemas.insert((*name).to_owned(), as_component(name, text));
    }
    let error = json!({
        "description": "A refusal or a failure: the kind and a sentence. 400 malformed input, 401, 403, 404, 409 or 422 refused by the book, 413: nothing was recorded. 503: the ledger could not finish; a write may have been recorded all the same (its acknowledgement lost), so send the same request with the same Idempotency-Key again: it is recorded once, and answered with its receipt.",
        "content": {"application/json": {"schema": {"$ref": component("error.response")}}}
    });
    let mut paths = Map::new();
    for doc in docs {
        let mut parameters = path_parameters(doc.path);
        if doc.writes {
            parameters.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": true,
                "description": "1 to 64 printable ASCII characters other than ':' and '#'; the same key again answers the first receipt and appends nothing.",
                "schema": {"type": "string", "pattern": "^[!-~]{1,64}$"}
            }));
        }
        for (name, description) in doc.query {
            parameters.push(json!({
                "name": name, "in": "query", "required": false,
                "description": description, "schema": {"type": "string"}
            }));
        }
        let mut success = match doc.response {
            Some(schema) => json!({
                "description": "Done (201 for a new event; 200 for the replay of a recorded one, or an answer that records nothing).",
                "content": {"application/json": {"schema": {"$ref": component(schema)}}}
            }),
            None if doc.media.is_empty() => {
                json!({"description": "OK", "content": {"text/plain": {}}})
            }
            None => json!({"description": "OK", "content": {}}),
        };
        for media in doc.media {
            success["content"][*media] = json!({});
        }
        let status = match (doc.accepted, doc.writes) {
            (true, _) => "202",
            (false, true) => "201",
            (false, false) => "200",
        };
        if doc.accepted {
            success["description"] = json!(
                "Started (202, with a Location to follow); 200 when this key's job already exists, with its state."
            );
            success["headers"] = json!({"Location": {"description": "Where the job's state is read.", "schema": {"type": "string"}}});
        }
        let mut operation = json!({
            "summary": doc.summary,
            "operationId": format!("{} {}", doc.method, doc.path),
            "parameters": parameters,
            "responses": {status: success, "default": error.clone()},
        });
        if let Some(description) = doc.description {
            operation["description"] = json!(description);
        }
        if doc.writes {
            operation["responses"]["200"] = operation["responses"][status].clone();
        }
        if let Some(request) = doc.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": component(request)}}}
            });
        }
        operation["security"] = match doc.caller {
            Caller::Staff => json!([{"staffToken": []}]),
            Caller::Gateway => {
                json!([{"gatewaySignature": [], "gatewayKeyId": [], "gatewayTimestamp": []}])
            }
            Caller::Anyone => json!([]),
        };
        let item = paths
            .entry(doc.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[doc.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ansinh staff and gateway HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Households, eligibility, policy-credit loans and social assistance payments, recorded in a hash-chained log. Money is whole VND as a decimal string; dates are YYYY-MM-DD; every string is read in one form (README, API section)."
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "staffToken": {"type": "http", "scheme": "bearer", "description": "A staff token from `ansinh admin add-staff`."},
                "gatewaySignature": {"type": "apiKey", "in": "header", "name": "Ansinh-Gateway-Signature", "description": "Ed25519 over timestamp, method, path and body (docs/GATEWAYS.md)."},
                "gatewayKeyId": {"type": "apiKey", "in": "header", "name": "Ansinh-Gateway-Key-Id"},
                "gatewayTimestamp": {"type": "apiKey", "in": "header", "name": "Ansinh-Gateway-Timestamp"}
            }
        }
    })
}
