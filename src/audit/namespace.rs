//! Checks on the namespace: does gracegate act on the workload at all?
//! `namespace-not-labelled`, `opted-out`.

use super::{Check, Ctx, Severity};
use crate::inject::Skip;
use crate::timing::ANNOTATION_INJECT;

impl Ctx<'_> {
    /// namespace-not-labelled, opted-out: whether gracegate acts on the workload at all.
    pub(super) fn namespace_checks(&mut self, skip: Option<Skip>) {
        let label = self.settings.inject.namespace_label.clone();
        let namespace_known = self.objects.namespace.is_some();
        match skip {
            Some(Skip::NamespaceNotOptedIn) | Some(Skip::NamespaceUnknown) => {
                let missing = if !namespace_known {
                    "could not be read"
                } else {
                    "is not labelled"
                };
                self.add(
                    Severity::Risk,
                    Check::NamespaceNotLabelled,
                    format!(
                        "namespace {} {missing} {}={}: gracegate adds no readiness gate, preStop or grace period to its pods",
                        self.ns(),
                        label.0,
                        label.1
                    ),
                    format!(
                        "kubectl label namespace {} {}={}, then {}",
                        self.ns(),
                        label.0,
                        label.1,
                        self.restart_command()
                    ),
                );
            }
            Some(Skip::NamespaceOptedOut) => self.add(
                Severity::Warn,
                Check::OptedOut,
                format!(
                    "namespace {} has {ANNOTATION_INJECT}=\"false\": gracegate adds nothing to its pods",
                    self.ns()
                ),
                format!(
                    "kubectl annotate namespace {} {ANNOTATION_INJECT}-",
                    self.ns()
                ),
            ),
            Some(Skip::PodOptedOut) => self.add(
                Severity::Warn,
                Check::OptedOut,
                format!(
                    "its pod template has {ANNOTATION_INJECT}=\"false\": gracegate adds nothing to its pods"
                ),
                format!(
                    "remove the annotation {ANNOTATION_INJECT} from spec.template.metadata.annotations"
                ),
            ),
            Some(Skip::NoBinding) | None => {}
        }
    }
}
