//! Deny by default: one table says who may call each agent API method, and a
//! tower layer enforces it on every request before any handler runs. A
//! method missing from the table is refused; a test checks that every method
//! of the generated service has a rule.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use super::caller::Authenticator;
use super::error::ApiError;
use super::listener::PeerInfo;

/// The gRPC service name of the agent API.
pub const SERVICE: &str = "sigil.agent.v1.AgentApi";

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No one.
    Nobody,
    /// A node that is attesting: no client certificate needed.
    AttestingNode,
    /// An attested agent with a valid, current agent SVID.
    Agent,
    /// An administrator. Admin calls belong on the local admin socket, so
    /// on this port an admin rule refuses everyone.
    Admin,
}

/// The table: every method of `sigil.agent.v1.AgentApi` and its rule.
pub const RULES: &[(&str, Access)] = &[
    ("AttestNode", Access::AttestingNode),
    ("RenewAgent", Access::Agent),
    ("SyncEntries", Access::Agent),
    ("SignSvids", Access::Agent),
    ("FetchBundle", Access::Agent),
    ("MintJwtSvid", Access::Agent),
];

/// The rule for a request path `/<service>/<method>`; `Nobody` for anything
/// not in the table.
pub fn access_for(path: &str) -> Access {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Access::Nobody;
    };
    if service != SERVICE {
        return Access::Nobody;
    }
    RULES
        .iter()
        .find(|(m, _)| *m == method)
        .map_or(Access::Nobody, |(_, a)| *a)
}

/// Applies [`RULES`] to every request.
#[derive(Clone)]
pub struct AccessLayer {
    auth: Arc<Authenticator>,
}

impl AccessLayer {
    pub fn new(auth: Arc<Authenticator>) -> AccessLayer {
        AccessLayer { auth }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = AccessService<S>;
    fn layer(&self, inner: S) -> AccessService<S> {
        AccessService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for AccessService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The ready service is the one we were polled for; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let peer = req.extensions().get::<PeerInfo>().cloned();
            let decision = match access_for(&path) {
                Access::AttestingNode => Ok(None),
                Access::Agent => {
                    let auth = auth.clone();
                    let p = path.clone();
                    match tokio::task::spawn_blocking(move || auth.authenticate(peer.as_ref(), &p))
                        .await
                    {
                        Ok(r) => r.map(Some),
                        Err(e) => Err(ApiError::task(e)),
                    }
                }
                Access::Nobody | Access::Admin => {
                    tracing::warn!(method = %path, "agent API call refused: method not allowed");
                    Err(ApiError::Refused(format!(
                        "{path} may not be called on the agent API"
                    )))
                }
            };
            match decision {
                Ok(caller) => {
                    if let Some(c) = caller {
                        req.extensions_mut().insert(c);
                    }
                    inner.call(req).await
                }
                Err(e) => Ok(Status::from(e).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of the generated service has exactly one rule, and the
    /// table names no method that does not exist. Adding an RPC without a
    /// rule fails here.
    #[test]
    fn every_generated_method_has_a_rule() {
        let fds = prost_types::FileDescriptorSet::decode(sigil_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = Vec::new();
        for file in &fds.file {
            for svc in &file.service {
                let full = format!("{}.{}", file.package(), svc.name());
                if full == SERVICE {
                    methods.extend(svc.method.iter().map(|m| m.name().to_string()));
                }
            }
        }
        assert!(!methods.is_empty(), "service {SERVICE} not found");
        for m in &methods {
            let n = RULES.iter().filter(|(r, _)| r == m).count();
            assert_eq!(n, 1, "method {m} must have exactly one rule in RULES");
        }
        for (r, _) in RULES {
            assert!(
                methods.contains(&r.to_string()),
                "rule for unknown method {r}"
            );
        }
        // Only attestation runs without a client certificate.
        for (m, a) in RULES {
            assert_eq!(*a == Access::AttestingNode, *m == "AttestNode", "{m}");
        }
    }

    #[test]
    fn unknown_paths_are_refused() {
        assert_eq!(
            access_for("/sigil.agent.v1.AgentApi/AttestNode"),
            Access::AttestingNode
        );
        assert_eq!(
            access_for("/sigil.agent.v1.AgentApi/SignSvids"),
            Access::Agent
        );
        assert_eq!(
            access_for("/sigil.agent.v1.AgentApi/NewMethod"),
            Access::Nobody
        );
        assert_eq!(
            access_for("/sigil.admin.v1.AdminApi/CreateEntries"),
            Access::Nobody
        );
        assert_eq!(
            access_for("/grpc.reflection.v1.ServerReflection/X"),
            Access::Nobody
        );
        assert_eq!(access_for(""), Access::Nobody);
        assert_eq!(access_for("/"), Access::Nobody);
    }
}
