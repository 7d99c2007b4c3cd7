use axum::Router;

use crate::http::Api;

pub fn routes() -> Router<Api> {
    Router::new()
}
