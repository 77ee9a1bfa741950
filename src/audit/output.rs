//! How an [`Audit`] is printed: a kubectl-style table, or a stable JSON/YAML report.
//!
//! The report (`apiVersion: gracegate.io/v1alpha1`, `kind: AuditReport`) is documented in the
//! README; fields are only ever added to it.

use serde::Serialize;

use super::{Audit, AuditedWorkload, Finding, Severity};

pub const REPORT_API_VERSION: &str = "gracegate.io/v1alpha1";
pub const REPORT_KIND: &str = "AuditReport";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub summary: Summary,
    pub workloads: &'a [AuditedWorkload],
    pub findings: &'a [Finding],
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub workloads: usize,
    pub risk: usize,
    pub warn: usize,
    pub info: usize,
}

pub fn report(audit: &Audit) -> Report<'_> {
    let count = |s: Severity| audit.findings.iter().filter(|f| f.severity == s).count();
    Report {
        api_version: REPORT_API_VERSION,
        kind: REPORT_KIND,
        summary: Summary {
            workloads: audit.workloads.len(),
            risk: count(Severity::Risk),
            warn: count(Severity::Warn),
            info: count(Severity::Info),
        },
        workloads: &audit.workloads,
        findings: &audit.findings,
    }
}

/// The audit in `format`. `color` only affects the table (severity in colour), and should
/// be on only when stdout is a terminal and `NO_COLOR` is not set.
pub fn render(audit: &Audit, format: Format, color: bool) -> String {
    match format {
        Format::Table => table(audit, color),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&report(audit))
                .expect("a report is plain data and always serialises");
            s.push('\n');
            s
        }
        Format::Yaml => serde_saphyr::to_string(&report(audit))
            .expect("a report is plain data and always serialises"),
    }
}

/// kubectl's look: upper-case headers, columns left-aligned and three spaces apart, no
/// borders. Hand-written: a dozen lines, where a table crate would add compile time to every
/// CI run for nothing more.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

fn table(audit: &Audit, color: bool) -> String {
    let r = report(audit);
    if audit.findings.is_empty() {
        return format!(
            "No findings: {} workload(s) behind TargetGroupBindings are ready for their next rollout.\n",
            r.summary.workloads
        );
    }
    let rows: Vec<Vec<String>> = audit
        .findings
        .iter()
        .map(|f| {
            vec![
                f.severity.as_str().to_uppercase(),
                f.namespace.clone(),
                format!("{}/{}", f.kind, f.name),
                f.check.to_string(),
                f.reason.clone(),
                f.fix.clone(),
            ]
        })
        .collect();
    let mut out = columns(
        &[
            "SEVERITY",
            "NAMESPACE",
            "WORKLOAD",
            "CHECK",
            "REASON",
            "FIX",
        ],
        &rows,
    );
    if color {
        // Colour only the first cell: padding was computed on the plain text.
        out = out
            .lines()
            .map(|line| {
                let code = if line.starts_with("RISK") {
                    "31"
                } else if line.starts_with("WARN") {
                    "33"
                } else {
                    return format!("{line}\n");
                };
                let (first, rest) = line.split_at(4);
                format!("\x1b[{code}m{first}\x1b[0m{rest}\n")
            })
            .collect();
    }
    out.push_str(&format!(
        "\n{} workload(s) behind TargetGroupBindings: {} risk, {} warn, {} info\n",
        r.summary.workloads, r.summary.risk, r.summary.warn, r.summary.info
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_like_kubectl() {
        let out = columns(
            &["NAME", "READY"],
            &[
                vec!["a".into(), "1/1".into()],
                vec!["longer-name".into(), "0/1".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME          READY\na             1/1\nlonger-name   0/1\n"
        );
    }
}
