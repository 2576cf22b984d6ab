//! HTTP routes on the data-plane listener: the route table, and serving a matched
//! request synchronously (the Lambda Function URL contract) or as a durable event.

use crate::error::{EngineError, Result, not_found};
use crate::function_url;
use crate::{Engine, InvokeOptions};
use bytes::Bytes;
use lambent_core::route::PathTemplate;
use lambent_core::{CloudEvent, RouteMode, RouteSpec};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The source of events made from HTTP requests.
pub const ROUTE_SOURCE: &str = "lambent/routes";

/// A request on the data plane, as the listener parsed it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// The path, percent-encoded as sent, without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Header names lower-cased, in the order sent (repeats kept).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub source_ip: String,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The answer to send.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRoute {
    spec: RouteSpec,
    template: PathTemplate,
}

/// A route a request matched, with its path parameters.
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    pub spec: RouteSpec,
    pub params: BTreeMap<String, String>,
}

/// What the route table says of a request.
#[derive(Debug, Clone)]
pub enum RouteMatch {
    Found(MatchedRoute),
    /// The path has routes, none for this method.
    MethodNotAllowed,
    NotFound,
}

impl Engine {
    /// Creates or replaces the route of a method and path; its target must exist.
    pub async fn put_route(&self, spec: RouteSpec) -> Result<RouteSpec> {
        let (spec, _) = spec.validate()?;
        self.function(&spec.target).await?;
        let _serial = self.inner.routes_lock.lock().await;
        self.inner.stores.routes.put_route(spec.clone()).await?;
        self.reload_routes().await?;
        Ok(spec)
    }

    pub async fn routes(&self) -> Result<Vec<RouteSpec>> {
        Ok(self.inner.stores.routes.list_routes().await?)
    }

    pub async fn delete_route(&self, method: &str, path: &str) -> Result<()> {
        let method = method.to_ascii_uppercase();
        let _serial = self.inner.routes_lock.lock().await;
        if !self.inner.stores.routes.delete_route(&method, path).await? {
            return Err(not_found("route", format!("{method} {path}")));
        }
        self.reload_routes().await
    }

    pub(crate) async fn reload_routes(&self) -> Result<()> {
        let routes = self.inner.stores.routes.list_routes().await?;
        let compiled = routes
            .into_iter()
            .filter_map(|spec| match spec.clone().validate() {
                Ok((spec, template)) => Some(CompiledRoute { spec, template }),
                Err(e) => {
                    tracing::error!(route = %spec.key(), error = %e, "stored route no longer valid; skipped");
                    None
                }
            })
            .collect();
        *self
            .inner
            .route_table
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(compiled);
        Ok(())
    }

    /// The route a request goes to: the most specific template that matches, a
    /// route of the exact method before an `ANY` one (`HEAD` falls back to `GET`).
    pub fn match_route(&self, method: &str, path: &str) -> RouteMatch {
        let table = self
            .inner
            .route_table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // (specificity, method rank, route, parameters) of the best match so far.
        type Best<'a> = (Vec<u8>, u8, &'a CompiledRoute, BTreeMap<String, String>);
        let mut best: Option<Best<'_>> = None;
        let mut path_matched = false;
        for route in table.iter() {
            let Some(params) = route.template.matches(path) else {
                continue;
            };
            path_matched = true;
            let rank = match route.spec.method.as_str() {
                m if m == method => 3,
                "GET" if method == "HEAD" => 2,
                "ANY" => 1,
                _ => continue,
            };
            let specificity = route.template.specificity();
            let better = match &best {
                None => true,
                Some((s, r, _, _)) => (&specificity, rank) > (s, *r),
            };
            if better {
                best = Some((specificity, rank, route, params));
            }
        }
        match best {
            Some((_, _, route, params)) => RouteMatch::Found(MatchedRoute {
                spec: route.spec.clone(),
                params,
            }),
            None if path_matched => RouteMatch::MethodNotAllowed,
            None => RouteMatch::NotFound,
        }
    }

    /// Serves a request on its matched route (the caller checked access).
    pub async fn serve_route(
        &self,
        route: MatchedRoute,
        request: HttpRequest,
    ) -> Result<HttpResponse> {
        match route.spec.mode {
            RouteMode::Sync => {
                let request_id = lambent_core::new_id();
                let payload = function_url::request_event(&route, &request, &request_id);
                let options = InvokeOptions {
                    request_id: Some(request_id),
                    traceparent: request.header("traceparent").map(str::to_owned),
                    ..InvokeOptions::default()
                };
                match self.invoke(&route.spec.target, payload, options).await {
                    Ok(invocation) => Ok(function_url::response(&invocation)),
                    Err(EngineError::Throttled { .. }) => Ok(HttpResponse::json(
                        429,
                        serde_json::json!({"message": "Too Many Requests"}),
                    )),
                    Err(e) => Err(e),
                }
            }
            RouteMode::Event => self.publish_request(&route, &request).await,
        }
    }

    /// Event mode: the request becomes a CloudEvent of the route's type (its body the
    /// data), stored durably before the 202.
    async fn publish_request(
        &self,
        route: &MatchedRoute,
        request: &HttpRequest,
    ) -> Result<HttpResponse> {
        let id = lambent_core::new_id();
        let ty = route.spec.ty.clone().unwrap_or_default();
        let event = CloudEvent::builder(id.clone(), ROUTE_SOURCE, ty)
            .attr("subject", request.path.clone())
            .bytes_data(request.header("content-type"), &request.body)
            .build()
            .map_err(|source| EngineError::Event { index: 0, source })?;
        // Published like any source's event: routed, also to the route's own target.
        self.publish_from(vec![event], Some(&route.spec.target))
            .await?;
        Ok(HttpResponse::json(
            202,
            serde_json::json!({"id": id, "source": ROUTE_SOURCE}),
        ))
    }
}
