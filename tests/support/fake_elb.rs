//! A scriptable fake of the ELBv2 API for tests and benches: an axum server on 127.0.0.1
//! speaking the AWS Query protocol (form-encoded `POST /`, XML answers) as the Rust SDK does.
//!
//! Supports `DescribeTargetHealth`, `DescribeTargetGroups` and
//! `DescribeTargetGroupAttributes`, plus scripted faults and delays and a log of requests.
//! Include it with `#[path = "../support/fake_elb.rs"] mod fake_elb;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const NAMESPACE: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// A scripted failure for the next calls, whatever their action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400, `Sender` / `Throttling`: what ELBv2 answers over its rate limit.
    Throttling,
    /// HTTP 500, `Receiver` / `InternalFailure`.
    InternalError,
    /// HTTP 503, `Receiver` / `ServiceUnavailable`.
    ServiceUnavailable,
}

/// One request as the fake received it, form parameters decoded and in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub action: String,
    pub params: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `Targets.member.N` filter of a `DescribeTargetHealth`, in member order.
    pub fn targets(&self) -> Vec<(String, Option<i32>)> {
        let mut members: BTreeMap<usize, (Option<String>, Option<i32>)> = BTreeMap::new();
        for (key, value) in &self.params {
            let Some(rest) = key.strip_prefix("Targets.member.") else {
                continue;
            };
            let Some((n, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(n) = n.parse() else { continue };
            let member = members.entry(n).or_default();
            match field {
                "Id" => member.0 = Some(value.clone()),
                "Port" => member.1 = value.parse().ok(),
                _ => {}
            }
        }
        members
            .into_values()
            .filter_map(|(id, port)| Some((id?, port)))
            .collect()
    }

    /// The values of a Query list parameter such as `Names.member.N`, in member order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let prefix = format!("{prefix}.member.");
        let mut members: BTreeMap<usize, String> = BTreeMap::new();
        for (key, value) in &self.params {
            if let Some(Ok(n)) = key.strip_prefix(&prefix).map(str::parse) {
                members.insert(n, value.clone());
            }
        }
        members.into_values().collect()
    }
}

#[derive(Clone, Debug)]
struct Health {
    state: String,
    reason: Option<String>,
    description: Option<String>,
}

#[derive(Clone, Debug)]
struct Target {
    id: String,
    port: i32,
    health: Health,
}

#[derive(Clone, Debug)]
struct TargetGroup {
    arn: String,
    name: String,
    deregistration_delay: u32,
    protocol: String,
    slow_start: u32,
    /// `deregistration_delay.connection_termination.enabled`; only NLB target groups have it.
    connection_termination: Option<bool>,
    /// Interval, timeout, healthy threshold, unhealthy threshold.
    health_check: (u32, u32, u32, u32),
    targets: Vec<Target>,
}

#[derive(Default)]
struct Inner {
    groups: Vec<TargetGroup>,
    faults: VecDeque<Fault>,
    delay: Duration,
    requests: Vec<RecordedRequest>,
    request_ids: u64,
}

impl Inner {
    fn group(&self, arn: &str) -> Option<&TargetGroup> {
        self.groups.iter().find(|g| g.arn == arn)
    }

    fn group_mut(&mut self, arn: &str) -> &mut TargetGroup {
        self.groups
            .iter_mut()
            .find(|g| g.arn == arn)
            .unwrap_or_else(|| {
                panic!("fake ELB: no target group {arn}; call add_target_group first")
            })
    }
}

/// Scripts and inspects a running fake. Cheap to clone and `Send`: hand one to a task that
/// changes a target's health later.
#[derive(Clone, Default)]
pub struct FakeElbHandle {
    inner: Arc<Mutex<Inner>>,
}

impl FakeElbHandle {
    // The lock is never held across an await, so a poisoned lock only follows a panic that
    // already fails the test.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An HTTP (ALB) target group with no targets, AWS's defaults: a deregistration delay of
    /// 300 s, health checks every 15 s with a 5 s timeout, 5 healthy / 2 unhealthy.
    pub fn add_target_group(&self, arn: &str, name: &str) {
        let mut inner = self.lock();
        inner.groups.retain(|g| g.arn != arn);
        inner.groups.push(TargetGroup {
            arn: arn.into(),
            name: name.into(),
            deregistration_delay: 300,
            protocol: "HTTP".into(),
            slow_start: 0,
            connection_termination: None,
            health_check: (15, 5, 5, 2),
            targets: Vec::new(),
        });
    }

    /// Make it a network load balancer's (TCP, AWS's NLB health-check defaults: every 30 s,
    /// 10 s timeout, 3/3), with connection termination off.
    pub fn make_network(&self, arn: &str) {
        let mut inner = self.lock();
        let g = inner.group_mut(arn);
        g.protocol = "TCP".into();
        g.connection_termination = Some(false);
        g.health_check = (30, 10, 3, 3);
    }

    pub fn set_health_check(
        &self,
        arn: &str,
        interval: u32,
        timeout: u32,
        healthy: u32,
        unhealthy: u32,
    ) {
        self.lock().group_mut(arn).health_check = (interval, timeout, healthy, unhealthy);
    }

    pub fn set_slow_start(&self, arn: &str, seconds: u32) {
        self.lock().group_mut(arn).slow_start = seconds;
    }

    pub fn set_deregistration_delay(&self, arn: &str, seconds: u32) {
        self.lock().group_mut(arn).deregistration_delay = seconds;
    }

    /// Registers the target if needed and sets what `DescribeTargetHealth` reports for it.
    pub fn set_health(
        &self,
        arn: &str,
        id: &str,
        port: i32,
        state: &str,
        reason: Option<&str>,
        description: Option<&str>,
    ) {
        let health = Health {
            state: state.into(),
            reason: reason.map(String::from),
            description: description.map(String::from),
        };
        let mut inner = self.lock();
        let group = inner.group_mut(arn);
        match group
            .targets
            .iter_mut()
            .find(|t| t.id == id && t.port == port)
        {
            Some(t) => t.health = health,
            None => group.targets.push(Target {
                id: id.into(),
                port,
                health,
            }),
        }
    }

    /// Forgets the target: from now on it is reported as not registered.
    pub fn deregister(&self, arn: &str, id: &str, port: i32) {
        self.lock()
            .group_mut(arn)
            .targets
            .retain(|t| !(t.id == id && t.port == port));
    }

    /// The next `n` calls, of any action, fail with `fault` (queued after earlier faults).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.lock().faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Every response, faults included, is sent `delay` after its request arrived.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Requests received for `action`, faulted ones included.
    pub fn calls(&self, action: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.action == action)
            .count()
    }

    /// `DescribeTargetHealth` requests received for the target group `arn`.
    pub fn describe_calls_for(&self, arn: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| {
                r.action == "DescribeTargetHealth" && r.param("TargetGroupArn") == Some(arn)
            })
            .count()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the requests received so far.
    pub fn reset_counts(&self) {
        self.lock().requests.clear();
    }
}

/// The running server. Stops when dropped.
pub struct FakeElb {
    handle: FakeElbHandle,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Deref for FakeElb {
    type Target = FakeElbHandle;

    fn deref(&self) -> &FakeElbHandle {
        &self.handle
    }
}

impl FakeElb {
    /// Listens on a free port of 127.0.0.1. Needs a Tokio runtime.
    pub async fn start() -> FakeElb {
        let handle = FakeElbHandle::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake ELB: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake ELB: local address");
        let app = Router::new()
            .route("/", post(serve))
            .with_state(handle.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeElb {
            handle,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle for scripting the fake from another task.
    pub fn handle(&self) -> FakeElbHandle {
        self.handle.clone()
    }

    /// Stops accepting, and waits (a little) for requests in flight.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            // A delayed response must not hold the caller up for long.
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for FakeElb {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An error in the Query protocol's `ErrorResponse` shape.
struct ElbError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl ElbError {
    fn sender(code: &'static str, message: impl Into<String>) -> ElbError {
        ElbError {
            status: StatusCode::BAD_REQUEST,
            kind: "Sender",
            code,
            message: message.into(),
        }
    }

    fn target_group_not_found() -> ElbError {
        ElbError::sender("TargetGroupNotFound", "One or more target groups not found")
    }

    fn from_fault(fault: Fault) -> ElbError {
        match fault {
            Fault::Throttling => ElbError::sender("Throttling", "Rate exceeded"),
            Fault::InternalError => ElbError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "Receiver",
                code: "InternalFailure",
                message: "An internal error has occurred".into(),
            },
            Fault::ServiceUnavailable => ElbError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "Receiver",
                code: "ServiceUnavailable",
                message: "Service is unavailable".into(),
            },
        }
    }
}

async fn serve(State(handle): State<FakeElbHandle>, headers: HeaderMap, body: Bytes) -> Response {
    let params = parse_form(&body);
    let action = params
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let request = RecordedRequest { action, params };
    let (delay, fault, request_id) = {
        let mut inner = handle.lock();
        inner.requests.push(request.clone());
        inner.request_ids += 1;
        let id = format!("00000000-0000-4000-8000-{:012x}", inner.request_ids);
        (inner.delay, inner.faults.pop_front(), id)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let result = match fault {
        Some(fault) => Err(ElbError::from_fault(fault)),
        None if !is_form(&headers) => Err(ElbError::sender(
            "InvalidParameterValue",
            "expected Content-Type application/x-www-form-urlencoded",
        )),
        None if request.param("Version") != Some("2015-12-01") => Err(ElbError::sender(
            "InvalidParameterValue",
            "expected Version=2015-12-01",
        )),
        None => answer(&handle.lock(), &request),
    };
    let (status, body) = match result {
        Ok(result) => (
            StatusCode::OK,
            format!(
                "<{action}Response xmlns=\"{NAMESPACE}\"><{action}Result>{result}</{action}Result>\
                 <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
                 </{action}Response>",
                action = request.action,
            ),
        ),
        Err(e) => (
            e.status,
            format!(
                "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{}</Type><Code>{}</Code>\
                 <Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                e.kind,
                e.code,
                escape(&e.message),
            ),
        ),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/xml".to_string()),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                request_id,
            ),
        ],
        body,
    )
        .into_response()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The `…Result` element's content for a successful call.
fn answer(inner: &Inner, request: &RecordedRequest) -> Result<String, ElbError> {
    match request.action.as_str() {
        "DescribeTargetHealth" => describe_target_health(inner, request),
        "DescribeTargetGroups" => describe_target_groups(inner, request),
        "DescribeTargetGroupAttributes" => {
            let arn = request.param("TargetGroupArn").unwrap_or_default();
            let group = inner
                .group(arn)
                .ok_or_else(ElbError::target_group_not_found)?;
            let mut out = String::from("<Attributes>");
            for (key, value) in [
                (
                    "deregistration_delay.timeout_seconds",
                    group.deregistration_delay.to_string(),
                ),
                ("stickiness.enabled", "false".into()),
                ("stickiness.type", "lb_cookie".into()),
                ("load_balancing.algorithm.type", "round_robin".into()),
                ("slow_start.duration_seconds", group.slow_start.to_string()),
            ]
            .into_iter()
            .chain(group.connection_termination.map(|on| {
                (
                    "deregistration_delay.connection_termination.enabled",
                    on.to_string(),
                )
            })) {
                let _ = write!(
                    out,
                    "<member><Key>{key}</Key><Value>{value}</Value></member>"
                );
            }
            out.push_str("</Attributes>");
            Ok(out)
        }
        "" => Err(ElbError::sender("MissingAction", "no Action parameter")),
        other => Err(ElbError::sender(
            "InvalidAction",
            format!("the fake ELB does not implement {other}"),
        )),
    }
}

fn describe_target_health(inner: &Inner, request: &RecordedRequest) -> Result<String, ElbError> {
    let arn = request.param("TargetGroupArn").unwrap_or_default();
    let group = inner
        .group(arn)
        .ok_or_else(ElbError::target_group_not_found)?;
    let filter = request.targets();
    let mut out = String::from("<TargetHealthDescriptions>");
    if filter.is_empty() {
        for t in &group.targets {
            push_description(&mut out, &t.id, Some(t.port), &t.health);
        }
    } else {
        // As AWS: exactly the targets asked for, unknown ones as `unused`.
        let not_registered = Health {
            state: "unused".into(),
            reason: Some("Target.NotRegistered".into()),
            description: Some("Target is not registered to the target group".into()),
        };
        for (id, port) in &filter {
            let known = group
                .targets
                .iter()
                .find(|t| &t.id == id && port.is_none_or(|p| p == t.port));
            match known {
                Some(t) => push_description(&mut out, &t.id, Some(t.port), &t.health),
                None => push_description(&mut out, id, *port, &not_registered),
            }
        }
    }
    out.push_str("</TargetHealthDescriptions>");
    Ok(out)
}

fn push_description(out: &mut String, id: &str, port: Option<i32>, health: &Health) {
    out.push_str("<member><Target>");
    let _ = write!(out, "<Id>{}</Id>", escape(id));
    if let Some(port) = port {
        let _ = write!(
            out,
            "<Port>{port}</Port></Target><HealthCheckPort>{port}</HealthCheckPort>"
        );
    } else {
        out.push_str("</Target>");
    }
    let _ = write!(
        out,
        "<TargetHealth><State>{}</State>",
        escape(&health.state)
    );
    if let Some(reason) = &health.reason {
        let _ = write!(out, "<Reason>{}</Reason>", escape(reason));
    }
    if let Some(description) = &health.description {
        let _ = write!(out, "<Description>{}</Description>", escape(description));
    }
    out.push_str("</TargetHealth></member>");
}

fn describe_target_groups(inner: &Inner, request: &RecordedRequest) -> Result<String, ElbError> {
    let names = request.list("Names");
    let arns = request.list("TargetGroupArns");
    let groups: Vec<&TargetGroup> = if !names.is_empty() {
        names
            .iter()
            .map(|n| inner.groups.iter().find(|g| &g.name == n))
            .collect::<Option<_>>()
            .ok_or_else(ElbError::target_group_not_found)?
    } else if !arns.is_empty() {
        arns.iter()
            .map(|a| inner.group(a))
            .collect::<Option<_>>()
            .ok_or_else(ElbError::target_group_not_found)?
    } else {
        inner.groups.iter().collect()
    };
    let mut out = String::from("<TargetGroups>");
    for g in groups {
        let _ = write!(
            out,
            "<member><TargetGroupArn>{}</TargetGroupArn><TargetGroupName>{}</TargetGroupName>\
             <Protocol>{}</Protocol><Port>80</Port><VpcId>vpc-0fake</VpcId>\
             <HealthCheckProtocol>{}</HealthCheckProtocol><HealthCheckPort>traffic-port</HealthCheckPort>\
             <HealthCheckEnabled>true</HealthCheckEnabled>\
             <HealthCheckIntervalSeconds>{}</HealthCheckIntervalSeconds>\
             <HealthCheckTimeoutSeconds>{}</HealthCheckTimeoutSeconds>\
             <HealthyThresholdCount>{}</HealthyThresholdCount>\
             <UnhealthyThresholdCount>{}</UnhealthyThresholdCount>\
             {}<LoadBalancerArns/><TargetType>ip</TargetType><IpAddressType>ipv4</IpAddressType></member>",
            escape(&g.arn),
            escape(&g.name),
            escape(&g.protocol),
            escape(&g.protocol),
            g.health_check.0,
            g.health_check.1,
            g.health_check.2,
            g.health_check.3,
            if g.protocol == "HTTP" {
                "<HealthCheckPath>/</HealthCheckPath><Matcher><HttpCode>200</HttpCode></Matcher>"
            } else {
                ""
            },
        );
    }
    out.push_str("</TargetGroups>");
    Ok(out)
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space, `%XX` a byte).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(s: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
