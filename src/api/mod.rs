//! The Nacos 1.x HTTP API: routing, request decoding and answers.
//!
//! [`handle`] reads the body under the configured cap, merges query and form parameters, routes
//! to a handler and turns its result into a response. Handlers live in one module per resource:
//! [`instance`], [`service`], [`operator`], [`core`] (the cluster), [`config`] (`/nacos/v1/cs`),
//! [`transfer`] (config export and import), [`namespace`]. No handler panic reaches a client: a
//! panic answers 500 and the connection carries on.

pub mod config;
pub mod core;
pub mod instance;
pub mod namespace;
pub mod operator;
pub mod service;
pub mod transfer;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::FutureExt;

use crate::error::{ApiError, ApiResult};
use crate::http::{Chunks, Method, Request};
use crate::naming::params::Params;
use crate::naming::service::{
    check_namespace, check_service_name_format, grouped_name, ServiceKey, DEFAULT_NAMESPACE,
};
use crate::node::shard::Shard;

/// `application/json;charset=UTF-8`
pub const JSON: &str = "application/json;charset=UTF-8";
/// `text/plain;charset=UTF-8`
pub const TEXT: &str = "text/plain;charset=UTF-8";

macro_rules! endpoints {
    ($($variant:ident => $name:literal,)*) => {
        /// Every endpoint Muster answers, for routing and metrics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Endpoint { $($variant,)* }
        impl Endpoint {
            /// All endpoints, in declaration order (`ALL[e as usize] == e`).
            #[cfg(test)]
            pub const ALL: &'static [Endpoint] = &[$(Endpoint::$variant,)*];
            /// The metrics labels, by endpoint number (`NAMES[e as usize] == e.name()`).
            pub const NAMES: &'static [&'static str] = &[$($name,)*];
            /// The metrics label.
            #[cfg(test)]
            pub fn name(self) -> &'static str {
                match self { $(Endpoint::$variant => $name,)* }
            }
        }
    };
}

endpoints! {
    InstanceRegister => "instance_register",
    InstanceDeregister => "instance_deregister",
    InstanceUpdate => "instance_update",
    InstancePatch => "instance_patch",
    InstanceDetail => "instance_detail",
    InstanceList => "instance_list",
    InstanceBeat => "instance_beat",
    MetadataBatchUpdate => "metadata_batch_update",
    MetadataBatchDelete => "metadata_batch_delete",
    ServiceCreate => "service_create",
    ServiceDelete => "service_delete",
    ServiceUpdate => "service_update",
    ServiceDetail => "service_detail",
    ServiceList => "service_list",
    ServiceNames => "service_names",
    ServiceSubscribers => "service_subscribers",
    CatalogServices => "catalog_services",
    CatalogInstances => "catalog_instances",
    CatalogService => "catalog_service",
    ClusterUpdate => "cluster_update",
    HealthUpdate => "health_update",
    HealthServer => "health_server",
    OperatorMetrics => "operator_metrics",
    OperatorServers => "operator_servers",
    OperatorSwitches => "operator_switches",
    Raft => "raft",
    LegacyList => "legacy_srv_ipxt",
    LegacyBeat => "legacy_client_beat",
    LegacyAllDomNames => "legacy_all_dom_names",
    CoreSelf => "core_cluster_self",
    CoreNodes => "core_cluster_nodes",
    CoreSimpleNodes => "core_cluster_simple_nodes",
    CoreHealth => "core_cluster_health",
    CoreMembers => "core_cluster_members",
    Liveness => "console_liveness",
    Readiness => "console_readiness",
    Metrics => "metrics",
    ConfigGet => "config_get",
    ConfigPublish => "config_publish",
    ConfigDelete => "config_delete",
    ConfigListener => "config_listener",
    ConfigHistory => "config_history",
    ConfigHistoryPrevious => "config_history_previous",
    NamespaceGet => "namespace_get",
    NamespaceCreate => "namespace_create",
    NamespaceUpdate => "namespace_update",
    NamespaceDelete => "namespace_delete",
    NoSuchApi => "no_such_api",
    NotFound => "not_found",
}

/// Maps a method and path to an endpoint. `/nacos/v1/ns/api/*` mirrors the instance API (the
/// legacy `ApiController` extends `InstanceController`); `/operator` is also `/ops`.
pub fn route(method: Method, path: &str) -> Endpoint {
    use Endpoint::*;
    // HEAD is answered as GET (as Spring MVC does); the connection drops the body.
    let method = if method == Method::Head {
        Method::Get
    } else {
        method
    };
    let path = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if path == "/metrics" && method == Method::Get {
        return Metrics;
    }
    if let Some(rest) = path.strip_prefix("/nacos/v1/console/health/") {
        return match (method, rest) {
            (Method::Get, "liveness") => Liveness,
            (Method::Get, "readiness") => Readiness,
            _ => NotFound,
        };
    }
    if let Some(rest) = path.strip_prefix("/nacos/v1/core/cluster") {
        return match (method, rest) {
            (Method::Get, "/self") => CoreSelf,
            (Method::Get, "/nodes") => CoreNodes,
            (Method::Get, "/simple/nodes") => CoreSimpleNodes,
            (Method::Get, "/health") => CoreHealth,
            (Method::Put, "/members") => CoreMembers,
            _ => NoSuchApi,
        };
    }
    if let Some(r) = path.strip_prefix("/nacos/v1/cs") {
        return match (method, r) {
            (Method::Get, "/configs") => ConfigGet,
            (Method::Post, "/configs") => ConfigPublish,
            (Method::Delete, "/configs") => ConfigDelete,
            (Method::Post, "/configs/listener") => ConfigListener,
            (Method::Get, "/history") => ConfigHistory,
            (Method::Get, "/history/previous") => ConfigHistoryPrevious,
            _ => NotFound,
        };
    }
    if path == "/nacos/v1/console/namespaces" {
        return match method {
            Method::Get => NamespaceGet,
            Method::Post => NamespaceCreate,
            Method::Put => NamespaceUpdate,
            Method::Delete => NamespaceDelete,
            _ => NotFound,
        };
    }
    let Some(rest) = path.strip_prefix("/nacos/v1/ns") else {
        return NotFound;
    };
    let m = method;
    let instance_like = |rest: &str| -> Option<Endpoint> {
        Some(match (m, rest) {
            (Method::Post, "") => InstanceRegister,
            (Method::Delete, "") => InstanceDeregister,
            (Method::Put, "") => InstanceUpdate,
            (Method::Patch, "") => InstancePatch,
            (Method::Get, "") => InstanceDetail,
            (Method::Get, "/list") => InstanceList,
            (Method::Put, "/beat") => InstanceBeat,
            (Method::Put, "/metadata/batch") => MetadataBatchUpdate,
            (Method::Delete, "/metadata/batch") => MetadataBatchDelete,
            _ => return None,
        })
    };
    if let Some(r) = rest.strip_prefix("/instance") {
        return instance_like(r).unwrap_or(NoSuchApi);
    }
    if let Some(r) = rest.strip_prefix("/api") {
        return match (m, r) {
            (Method::Get, "/srvIPXT") => LegacyList,
            (_, "/clientBeat") => LegacyBeat,
            (Method::Get, "/allDomNames") => LegacyAllDomNames,
            _ => instance_like(r).unwrap_or(NoSuchApi),
        };
    }
    let r = rest;
    match (m, r) {
        (Method::Post, "/service") => ServiceCreate,
        (Method::Delete, "/service") => ServiceDelete,
        (Method::Put, "/service") => ServiceUpdate,
        (Method::Get, "/service") => ServiceDetail,
        (Method::Get, "/service/list") => ServiceList,
        (Method::Get, "/service/names") => ServiceNames,
        (Method::Get, "/service/subscribers") => ServiceSubscribers,
        (Method::Get, "/catalog/services") => CatalogServices,
        (Method::Get, "/catalog/instances") => CatalogInstances,
        (Method::Get, "/catalog/service") => CatalogService,
        (Method::Put, "/cluster") => ClusterUpdate,
        (Method::Put, "/health") | (Method::Put, "/health/instance") => HealthUpdate,
        (Method::Get, "/health/server") => HealthServer,
        (Method::Get, "/operator/metrics") | (Method::Get, "/ops/metrics") => OperatorMetrics,
        (Method::Get, "/operator/servers") | (Method::Get, "/ops/servers") => OperatorServers,
        (Method::Get, "/operator/switches") | (Method::Get, "/ops/switches") => OperatorSwitches,
        (_, r) if r.starts_with("/raft/") => Raft,
        _ => NoSuchApi,
    }
}

/// An answer: the HTTP layer's response (status 200 unless a handler says otherwise).
pub use crate::http::Response as Answer;

impl crate::http::Handler for Shard {
    fn limits(&self) -> crate::http::Limits {
        let cfg = &self.shared.config;
        crate::http::Limits {
            max_header_bytes: cfg.max_header_bytes,
            max_body_bytes: cfg.max_body_bytes,
            idle_timeout: std::time::Duration::from_millis(cfg.idle_timeout_ms),
            head_timeout: std::time::Duration::from_millis(cfg.head_timeout_ms),
        }
    }

    fn connections(&self) -> &crate::http::Connections {
        &self.connections
    }

    fn listen_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    fn handle<'a>(
        self: &'a Rc<Self>,
        req: &'a Request<'a>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> impl std::future::Future<Output = Answer> + 'a {
        handle(self, req, peer, local)
    }

    fn refused(&self) {
        self.metrics()
            .http_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn head_timed_out(&self) {
        self.metrics()
            .head_timeouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Answer {
    /// 200 with a JSON body.
    pub fn json(v: &serde_json::Value) -> Answer {
        Answer {
            status: 200,
            content_type: JSON,
            body: Chunks::one(Bytes::from(serde_json::to_vec(v).unwrap_or_default())),
            headers: Vec::new(),
        }
    }

    /// 200 with already-rendered JSON.
    pub fn json_bytes(body: Bytes) -> Answer {
        Answer {
            status: 200,
            content_type: JSON,
            body: Chunks::one(body),
            headers: Vec::new(),
        }
    }

    /// 200 with JSON made of chunks (a list answer around a cached host array).
    pub fn json_chunks(parts: Vec<Bytes>) -> Answer {
        Answer {
            status: 200,
            content_type: JSON,
            body: Chunks::many(parts),
            headers: Vec::new(),
        }
    }

    /// 200 `ok`.
    pub fn ok() -> Answer {
        Answer::text("ok")
    }

    /// 200 with a text body.
    pub fn text(s: &'static str) -> Answer {
        Answer {
            status: 200,
            content_type: TEXT,
            body: Chunks::one(Bytes::from_static(s.as_bytes())),
            headers: Vec::new(),
        }
    }
}

/// What a handler sees of a request.
pub struct Ctx<'a> {
    /// The shard serving the request.
    pub shard: &'a Rc<Shard>,
    /// Merged parameters.
    pub params: Params<'a>,
    /// `User-Agent`, falling back to `Client-Version`.
    pub agent: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
}

impl Ctx<'_> {
    /// Namespace (`namespaceId`, default `public`), checked against Nacos's rule.
    pub fn namespace(&self) -> ApiResult<&str> {
        let ns = self
            .params
            .optional("namespaceId")
            .unwrap_or(DEFAULT_NAMESPACE);
        check_namespace(ns)?;
        Ok(ns)
    }

    /// The service key: `serviceName` (or legacy `dom`) grouped with `groupName`, validated
    /// with `NamingUtils.checkServiceNameFormat`.
    pub fn service_key(&self) -> ApiResult<ServiceKey> {
        let ns = self.namespace()?;
        let raw = match self.params.get("serviceName") {
            Some(v) if !v.is_empty() => v,
            _ => match self.params.get("dom") {
                Some(v) if !v.is_empty() => v,
                _ => return Err(ApiError::required("serviceName")),
            },
        };
        let grouped = grouped_name(raw, self.params.optional("groupName"));
        check_service_name_format(&grouped)?;
        Ok(ServiceKey::new(ns, &grouped))
    }

    /// Whether the client is a Java client ≥ 1.0.0 (grouped names, strict update).
    pub fn java_1x(&self) -> bool {
        client_is_java_1x(self.agent)
    }
}

/// Nacos's `ClientInfo`: `Nacos-Java-Client:v<version>` with version ≥ 1.0.0.
pub fn client_is_java_1x(agent: &str) -> bool {
    let Some(v) = agent.strip_prefix("Nacos-Java-Client:v") else {
        return false;
    };
    let major: u64 = v
        .split(['.', '-'])
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    major >= 1
}

/// Answers one request. Never panics outward: a handler panic becomes a 500.
pub async fn handle(
    shard: &Rc<Shard>,
    req: &Request<'_>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Answer {
    let start = Instant::now();
    let ep = route(req.method, req.path);
    let result = AssertUnwindSafe(dispatch(shard, req, ep, peer, local))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(
                method = req.method_name,
                path = req.path,
                "handler panicked; answering 500"
            );
            Err(ApiError::server(
                "internal error while handling the request",
            ))
        });
    let answer = match result {
        Ok(a) => a,
        Err(e) => {
            let content_type = if e.kind == crate::error::ErrorKind::Servlet {
                JSON
            } else {
                TEXT
            };
            if e.status >= 500 {
                tracing::debug!(method = req.method_name, path = req.path, status = e.status, msg = %e.msg, "request failed");
            }
            Answer {
                status: e.status,
                content_type,
                body: Chunks::one(Bytes::from(e.body(req.path))),
                headers: Vec::new(),
            }
        }
    };
    shard.metrics().record(
        ep as usize,
        answer.status,
        start.elapsed().as_micros() as u64,
    );
    answer
}

async fn dispatch(
    shard: &Rc<Shard>,
    req: &Request<'_>,
    ep: Endpoint,
    peer: SocketAddr,
    local: SocketAddr,
) -> ApiResult<Answer> {
    use Endpoint::*;
    if ep == NotFound {
        return Err(ApiError {
            status: 404,
            msg: "Not Found".into(),
            kind: crate::error::ErrorKind::Servlet,
        });
    }
    if ep == NoSuchApi {
        return Err(ApiError::no_such_api(req.method_name, req.path));
    }
    // Nacos's status gate: naming answers 503 until persistent state is recovered and (in a
    // cluster) loaded from a peer, and again while shutting down. Status endpoints stay open
    // so probes can see why.
    let open =
        |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::Relaxed);
    if req.path.starts_with("/nacos/v1/ns")
        && !matches!(ep, OperatorMetrics | OperatorServers | HealthServer)
        && !(open(&shard.shared.recovered) && open(&shard.shared.loaded))
    {
        return Err(ApiError::unavailable(
            "server is STARTINGnow, please try again later!",
        ));
    }
    let params = Params::parse(
        req.query.map(str::as_bytes),
        if req.form && !req.body.is_empty() {
            Some(req.body)
        } else {
            None
        },
    )?;
    let ctx = Ctx {
        shard,
        params,
        agent: req.agent,
        peer,
        local,
    };
    match ep {
        InstanceRegister => instance::register(&ctx).await,
        InstanceDeregister => instance::deregister(&ctx).await,
        InstanceUpdate => instance::update(&ctx).await,
        InstancePatch => instance::patch(&ctx).await,
        InstanceDetail => instance::detail(&ctx),
        InstanceList => instance::list(&ctx, None).await,
        InstanceBeat => instance::beat(&ctx, None).await,
        MetadataBatchUpdate => instance::metadata_batch(&ctx, false).await,
        MetadataBatchDelete => instance::metadata_batch(&ctx, true).await,
        LegacyList => {
            let dom = ctx.params.required("dom")?;
            instance::list(&ctx, Some(format!("DEFAULT_GROUP@@{dom}"))).await
        }
        LegacyBeat => {
            let dom = ctx.params.required("dom")?;
            instance::beat(&ctx, Some(format!("DEFAULT_GROUP@@{dom}"))).await
        }
        ServiceCreate => service::create(&ctx).await,
        ServiceDelete => service::delete(&ctx).await,
        ServiceUpdate => service::update(&ctx).await,
        ServiceDetail => service::detail(&ctx),
        ServiceList => service::list(&ctx),
        ServiceNames => service::names(&ctx),
        ServiceSubscribers => service::subscribers(&ctx).await,
        LegacyAllDomNames => service::all_dom_names(&ctx),
        CatalogServices => service::catalog_services(&ctx),
        CatalogInstances => service::catalog_instances(&ctx),
        CatalogService => service::catalog_service(&ctx),
        ClusterUpdate => service::update_cluster(&ctx).await,
        HealthUpdate => instance::set_health(&ctx).await,
        HealthServer => operator::health_server(&ctx),
        OperatorMetrics => operator::metrics(&ctx),
        OperatorServers => operator::servers(&ctx),
        OperatorSwitches => operator::switches(&ctx),
        Raft => Err(ApiError::server("old raft protocol already stop")),
        CoreSelf => core::this(&ctx),
        CoreNodes => core::nodes(&ctx),
        CoreSimpleNodes => core::simple_nodes(&ctx),
        CoreHealth => core::health(&ctx),
        CoreMembers => core::set_members(&ctx, req),
        ConfigGet => {
            // Muster's extension: a linearizable read (`Shard::read_barrier`).
            if ctx.params.get("linearizable") == Some("true") {
                ctx.shard.read_barrier(None).await?;
            }
            config::get(&ctx, req)
        }
        ConfigPublish => config::publish(&ctx, req).await,
        ConfigDelete => config::delete(&ctx, req).await,
        ConfigListener => config::listener(&ctx, req).await,
        ConfigHistory => config::history(&ctx),
        ConfigHistoryPrevious => config::history_previous(&ctx),
        NamespaceGet => namespace::get(&ctx),
        NamespaceCreate => namespace::create(&ctx).await,
        NamespaceUpdate => namespace::update(&ctx).await,
        NamespaceDelete => namespace::delete(&ctx).await,
        Liveness => Ok(Answer::text("OK")),
        Readiness => operator::readiness(&ctx),
        Metrics => Ok(Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: Chunks::one(Bytes::from({
                let mut text = shard.shared.metrics.render();
                if let Some(members) = &shard.shared.members {
                    crate::node::metrics::render_members(&mut text, members);
                    crate::node::metrics::render_distro(&mut text, &shard.shared.outboxes.all());
                }
                shard
                    .shared
                    .raft
                    .render(&mut text, shard.shared.transport.as_ref());
                text.push_str(&shard.shared.configs.render_metrics());
                text
            })),
            headers: Vec::new(),
        }),
        NoSuchApi | NotFound => unreachable!("answered above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_are_indexed_by_endpoint_number() {
        for &e in Endpoint::ALL {
            assert_eq!(Endpoint::NAMES[e as usize], e.name());
        }
        assert_eq!(Endpoint::NAMES.len(), Endpoint::ALL.len());
    }

    #[test]
    fn routes_cover_the_instance_api_and_its_legacy_mirror() {
        assert_eq!(
            route(Method::Post, "/nacos/v1/ns/instance"),
            Endpoint::InstanceRegister
        );
        assert_eq!(
            route(Method::Post, "/nacos/v1/ns/instance/"),
            Endpoint::InstanceRegister
        );
        assert_eq!(
            route(Method::Get, "/nacos/v1/ns/instance/list"),
            Endpoint::InstanceList
        );
        assert_eq!(
            route(Method::Put, "/nacos/v1/ns/api/beat"),
            Endpoint::InstanceBeat
        );
        assert_eq!(
            route(Method::Get, "/nacos/v1/ns/api/srvIPXT"),
            Endpoint::LegacyList
        );
        assert_eq!(
            route(Method::Post, "/nacos/v1/ns/instance/list"),
            Endpoint::NoSuchApi
        );
        assert_eq!(route(Method::Get, "/nacos/v1/ns/nope"), Endpoint::NoSuchApi);
        assert_eq!(route(Method::Get, "/elsewhere"), Endpoint::NotFound);
        assert_eq!(
            route(Method::Get, "/nacos/v1/ns/ops/metrics"),
            Endpoint::OperatorMetrics
        );
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }

    #[test]
    fn java_client_version_gate() {
        assert!(client_is_java_1x("Nacos-Java-Client:v1.4.6"));
        assert!(client_is_java_1x("Nacos-Java-Client:v1.0.0"));
        assert!(!client_is_java_1x("Nacos-Java-Client:v0.9.0"));
        assert!(!client_is_java_1x("Nacos-Python-Client:v0.1.16"));
        assert!(!client_is_java_1x(""));
    }
}
