//! Authenticating agents: the projected service-account token an agent presents on the
//! snapshot stream is checked with a TokenReview against the API server (audience
//! [`AGENT_AUDIENCE`]), as the kubelet checks tokens. A token bound to a pod on a node carries
//! that node's name, so the agent may only subscribe as that node.

use async_trait::async_trait;
use blixt_stream::{AuthMethod, Identity, TokenError, TokenVerifier};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

/// The audience agent tokens must be minted for.
pub const AGENT_AUDIENCE: &str = "blixt-controller";

/// `extra` key of a pod-bound service-account token naming the pod's node.
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Verifies bearer tokens with TokenReview.
#[derive(Clone)]
pub struct TokenReviewVerifier {
    client: Client,
}

impl std::fmt::Debug for TokenReviewVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewVerifier")
            .finish_non_exhaustive()
    }
}

impl TokenReviewVerifier {
    pub fn new(client: Client) -> Self {
        TokenReviewVerifier { client }
    }
}

#[async_trait]
impl TokenVerifier for TokenReviewVerifier {
    async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![AGENT_AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let done = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| TokenError::Unavailable(format!("TokenReview: {e}")))?;
        let status = done.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(TokenError::Invalid(
                status.error.unwrap_or_else(|| "not authenticated".into()),
            ));
        }
        let user = status.user.unwrap_or_default();
        let node_name = user
            .extra
            .as_ref()
            .and_then(|e| e.get(NODE_NAME_EXTRA))
            .and_then(|v| v.first().cloned());
        Ok(Identity {
            username: user.username.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            node_name,
            method: AuthMethod::Token,
        })
    }
}
