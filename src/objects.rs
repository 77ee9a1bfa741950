//! A namespace's objects, as every decision reads them: the Namespace, its Services,
//! TargetGroupBindings and Ingresses, and what the leader learnt about target groups. The
//! webhook gets them from its reflector caches (or files), the watcher from its own, `plan`
//! and `audit` from one read of the cluster: the decisions never know which.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::networking::v1::Ingress;

use crate::binding::TargetGroupBinding;
use crate::facts::Records;

/// The cluster objects of one namespace that a decision reads.
#[derive(Clone, Debug, Default)]
pub struct NamespaceObjects {
    /// `None` when the namespace is not (yet) known: nothing is injected.
    pub namespace: Option<Arc<Namespace>>,
    pub services: Vec<Arc<Service>>,
    pub bindings: Vec<Arc<TargetGroupBinding>>,
    pub ingresses: Vec<Arc<Ingress>>,
    /// What the leader learnt about target groups (facts and measured drains), from the
    /// `gracegate-target-groups` ConfigMap; empty when there is none yet.
    pub target_groups: Arc<Records>,
}

impl NamespaceObjects {
    /// The Service of that name in the namespace.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .map(|s| s.as_ref())
    }
}
