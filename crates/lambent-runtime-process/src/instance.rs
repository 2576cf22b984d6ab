//! One runtime process and its Runtime API endpoint.

use crate::api::{self, NextInvocation, Reported, Shared, Slots};
use crate::capture::Capture;
use crate::sandbox::{
    self,
    plan::{Bind, Plan, RUNTIME_API_PORT, RUNTIME_ROOT, TASK_ROOT},
};
use async_trait::async_trait;
use bytes::Bytes;
use lambent_core::function::RESERVED_ENV;
use lambent_core::{RuntimeKind, now_ms};
use lambent_runtime::{
    Instance, InstanceConfig, InvokeOutcome, InvokeRequest, InvokeResult, RuntimeError,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What the runtime needs to start one process.
/// Environment every instance gets that its runtime reads as it starts (a spare's
/// pre-started interpreter starts with these too).
pub(crate) const STARTUP_ENV: &[(&str, &str)] = &[("TZ", ":UTC"), ("LANG", "en_US.UTF-8")];

pub(super) struct Launch {
    pub config: InstanceConfig,
    pub command: crate::Command,
    pub runtime_dir: PathBuf,
    pub instances_dir: PathBuf,
    pub region: String,
    /// Set when the instance runs in a sandbox.
    pub sandbox: Option<Sandboxed>,
}

/// How to sandbox one instance: from a spare.
pub(super) struct Sandboxed {
    pub spares: Arc<sandbox::spare::Spares>,
}

pub struct ProcessInstance {
    name: String,
    /// The function's timeout: what a timeout reports (as Lambda states it).
    timeout_ms: u64,
    arn: String,
    /// The process group, while it can be signalled safely: until the leader is
    /// reaped (a zombie leader keeps its group id from being reused). The watcher
    /// kills the group when the leader exits, then reaps it and clears this.
    group: Arc<Mutex<Option<Pid>>>,
    next: mpsc::Sender<NextInvocation>,
    shared: Arc<Shared>,
    capture: Capture,
    usable: bool,
    scratch: PathBuf,
    server: JoinHandle<()>,
    watcher: JoinHandle<()>,
    /// The outbound network of a `net` grant (slirp4netns), stopped with the instance.
    _outbound: Option<sandbox::slirp::Outbound>,
}

/// The instance's Runtime API endpoint: in its own network namespace (bound there by
/// the sandbox), or — with isolation off — on a port of the host's loopback.
struct Endpoint {
    listener: tokio::net::TcpListener,
    /// `AWS_LAMBDA_RUNTIME_API` as the function sees it.
    address: String,
}

impl Endpoint {
    fn inside(listener: std::net::TcpListener) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener: tokio::net::TcpListener::from_std(listener)?,
            address: format!("127.0.0.1:{RUNTIME_API_PORT}"),
        })
    }

    /// Without a sandbox, any local process could reach this port: isolation off
    /// means exactly that (and AWS's client takes no path in the address).
    async fn on_host() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Ok(Self {
            address: listener.local_addr()?.to_string(),
            listener,
        })
    }
}

impl ProcessInstance {
    pub(super) async fn spawn(launch: Launch) -> Result<Self, RuntimeError> {
        let spec = &launch.config.spec;
        let name = spec.name.clone();
        let spawn_err = |source: std::io::Error| RuntimeError::Spawn {
            function: name.clone(),
            source,
        };
        let sandboxed = launch.sandbox.is_some();
        let isolation_err = |detail: String| RuntimeError::Isolation {
            function: name.clone(),
            detail,
        };
        // A sandbox made ahead of need, or now.
        let spare = match &launch.sandbox {
            Some(s) => Some(match s.spares.take(prestart_kind(&spec.runtime)) {
                Some(spare) => spare,
                None => s
                    .spares
                    .make()
                    .await
                    .map_err(|e| isolation_err(format!("cannot build its sandbox: {e}")))?,
            }),
            None => None,
        };
        let endpoint = match &spare {
            Some(spare) => {
                let listener = spare.listener.try_clone().map_err(spawn_err)?;
                Endpoint::inside(listener).map_err(spawn_err)?
            }
            None => Endpoint::on_host().await.map_err(spawn_err)?,
        };
        // A `net` grant connects the sandbox's own namespace outward (never to the
        // host's loopback).
        let net_grants = spec.net_grants();
        let egress = match &spare {
            Some(_) if !net_grants.is_empty() => Some(
                sandbox::egress::plan(&net_grants, sandbox::egress::resolve)
                    .await
                    .map_err(isolation_err)?,
            ),
            _ => None,
        };
        let outbound = match (&spare, &egress) {
            (Some(spare), Some(egress)) => {
                let connected = async {
                    let ns = std::fs::File::open(format!("/proc/{}/ns/net", spare.init_pid))?;
                    sandbox::slirp::connect(&std::os::fd::OwnedFd::from(ns), egress.host_loopback)
                        .await
                };
                Some(connected.await.map_err(|e| {
                    isolation_err(format!(
                        "its `net` grant needs {} (install it, e.g. `apt-get install slirp4netns`): {e}",
                        sandbox::slirp::PROGRAM
                    ))
                })?)
            }
            _ => None,
        };
        let (next_tx, next_rx) = mpsc::channel(1);
        // The instance's key to the node's services: fresh, and only in its environment.
        let api_token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let shared = Arc::new(Shared {
            next: tokio::sync::Mutex::new(next_rx),
            state: Mutex::new(Slots::default()),
            services: launch
                .config
                .host
                .clone()
                .map(|host| crate::host_api::Services {
                    host,
                    spec: spec.clone(),
                    token: api_token.clone(),
                }),
        });
        let app = api::router(shared.clone());
        let listener = endpoint.listener;
        let server = tokio::spawn(async move {
            // One runtime process talks to this endpoint: a few connections suffice.
            // Its keep-alive connection sits idle while a handler runs (up to Lambda's
            // 15 minutes), so the idle/header timeout must outlast any handler.
            let limits = lambent_http::Limits {
                max_connections: 16,
                header_read_timeout: std::time::Duration::from_secs(16 * 60),
            };
            lambent_http::serve(listener, app, limits, std::future::pending()).await;
        });

        let (id, scratch) = match &spare {
            Some(spare) => (spare.id.clone(), spare.scratch.clone()),
            None => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let scratch = launch.instances_dir.join(&id);
                std::fs::create_dir_all(&scratch).map_err(spawn_err)?;
                (id, scratch)
            }
        };

        // Paths as the function sees them.
        let (task_root, runtime_root, tmp) = if sandboxed {
            (TASK_ROOT.into(), RUNTIME_ROOT.into(), "/tmp".into())
        } else {
            (
                launch.config.code_dir.clone(),
                launch.runtime_dir.clone(),
                scratch.clone(),
            )
        };
        let runtime_id = spec.runtime.declared();
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            // Refused at deploy; filtered again here so no spec can override them.
            .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let text = |p: &std::path::Path| p.display().to_string();
        env.extend([
            ("AWS_LAMBDA_RUNTIME_API".into(), endpoint.address.clone()),
            ("LAMBENT_API_TOKEN".into(), api_token.clone()),
            ("_HANDLER".into(), spec.handler.clone()),
            ("LAMBDA_TASK_ROOT".into(), text(&task_root)),
            ("LAMBDA_RUNTIME_DIR".into(), text(&runtime_root)),
            ("AWS_LAMBDA_FUNCTION_NAME".into(), spec.name.clone()),
            (
                "AWS_LAMBDA_FUNCTION_VERSION".into(),
                launch.config.version.to_string(),
            ),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
                spec.memory_mb.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME".into(),
                format!("/aws/lambda/{}", spec.name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME".into(),
                format!(
                    "{}/[{}]{id}",
                    chrono::Utc::now().format("%Y/%m/%d"),
                    launch.config.version
                ),
            ),
            ("AWS_REGION".into(), launch.region.clone()),
            ("AWS_DEFAULT_REGION".into(), launch.region.clone()),
            (
                "AWS_EXECUTION_ENV".into(),
                format!("AWS_Lambda_{runtime_id}"),
            ),
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("TMPDIR".into(), text(&tmp)),
        ]);
        env.extend(
            STARTUP_ENV
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned())),
        );
        env.extend(launch.command.env.iter().cloned());
        let data_limit = data_limit_bytes(&spec.runtime, spec.memory_mb);

        let mut cgroups = None;
        let (mut child, mut capture) = match spare {
            None => {
                let (capture, child_out) = Capture::new().map_err(spawn_err)?;
                let child_err = child_out.try_clone().map_err(spawn_err)?;
                let mut cmd = tokio::process::Command::new(&launch.command.program);
                cmd.args(&launch.command.args)
                    .current_dir(&launch.config.code_dir)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .stdin(std::process::Stdio::null())
                    .stdout(child_out)
                    .stderr(child_err)
                    .process_group(0)
                    .kill_on_drop(true);
                // SAFETY: the closure runs in the forked child before exec and only
                // makes system calls (setrlimit(2), prctl(2)), which are
                // async-signal-safe; it allocates nothing and touches no state shared
                // with the parent.
                unsafe {
                    cmd.pre_exec(move || {
                        use nix::sys::resource::{Resource, setrlimit};
                        setrlimit(Resource::RLIMIT_NOFILE, 1024, 1024)?;
                        setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
                        setrlimit(Resource::RLIMIT_DATA, data_limit, data_limit)?;
                        // Die with the node, even by kill -9. (The signal follows the
                        // thread that forked: instances are spawned from the runtime's
                        // worker threads, which live as long as the node.)
                        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                        Ok(())
                    });
                }
                (cmd.spawn().map_err(spawn_err)?, capture)
            }
            Some(spare) => {
                if let Some(groups) = &spare.cgroups {
                    groups
                        .limit(cgroup_limits(spec.memory_mb))
                        .map_err(|e| isolation_err(format!("cannot limit its cgroups: {e}")))?;
                }
                cgroups = spare.cgroups;
                // What the spare's prelude bound already (the system's directories and
                // a pre-started interpreter's installation) is not bound again.
                let mut bound: Vec<PathBuf> = launch
                    .sandbox
                    .as_ref()
                    .map(|s| s.spares.system_dirs().to_vec())
                    .unwrap_or_default();
                bound.extend(spare.prelude_dirs.iter().cloned());
                let mut plan = sandbox_plan(&launch, &bound, &scratch, env, data_limit);
                plan.firewall = egress.and_then(|e| e.firewall);
                // A plan is far smaller than the socket's buffer: this does not block.
                // If the sandbox died meanwhile, the watcher reports how.
                let _ = sandbox::channel::write_message(&mut &spare.control, &plan);
                (spare.child, spare.capture)
            }
        };
        if let Some(note) = &launch.command.note {
            capture.note(note);
        }
        let leader = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw);
        // A pidfd tells when the leader exits without reaping it, so the group can be
        // killed while its id is still reserved.
        let exited = leader.and_then(|pid| {
            let pid = rustix::process::Pid::from_raw(pid.as_raw())?;
            let fd =
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok()?;
            // SAFETY: `fd` is an open pidfd owned by the AsyncFd for its whole life; an
            // OwnedFd's `as_raw_fd` always returns that same descriptor.
            unsafe { tokio::io::unix::AsyncFd::register(fd) }.ok()
        });
        let group = Arc::new(Mutex::new(leader));

        let memory_limit = cgroup_limits(spec.memory_mb).memory_bytes;
        let watch_shared = shared.clone();
        let watch_group = group.clone();
        let watcher = tokio::spawn(async move {
            if let Some(exited) = &exited {
                let _ = exited.readable().await;
                // The leader is a zombie, so the group id is still ours: take down what it
                // left in its group and forget the id before reaping frees it.
                let mut group = watch_group.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(pgid) = group.take() {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
            }
            let status = child.wait().await;
            // Reaped (without a pidfd, only now known): never signal that id again.
            *watch_group.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let mut detail = match status {
                Ok(status) => format!("runtime process exited: {status}"),
                Err(e) => format!("runtime process lost: {e}"),
            };
            if let Some(groups) = cgroups {
                if groups.hit_memory_limit() {
                    detail = format!(
                        "out of memory: the instance reached its memory limit ({} MiB) ({detail})",
                        memory_limit >> 20
                    );
                }
                // Everything in the sandbox died with its PID 1: the groups are empty.
                drop(groups);
            }
            if let Ok(mut slots) = watch_shared.state.lock() {
                let report = slots.init_error.take().unwrap_or(Reported::Exited(detail));
                match slots.inflight.take() {
                    Some((_, tx)) => {
                        let _ = tx.send(report);
                    }
                    None => slots.init_error = Some(report),
                }
            }
        });

        Ok(Self {
            arn: format!(
                "arn:aws:lambda:{}:000000000000:function:{}",
                launch.region, spec.name
            ),
            name: spec.name.clone(),
            timeout_ms: u64::from(spec.timeout_s) * 1000,
            group,
            next: next_tx,
            shared,
            capture,
            usable: true,
            scratch,
            server,
            watcher,
            _outbound: outbound,
        })
    }

    fn kill(&mut self) {
        self.usable = false;
        kill_group(&self.group);
    }

    fn headers(&self, req: &InvokeRequest) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("lambda-runtime-deadline-ms", req.deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", self.arn.clone()),
            (
                "lambda-runtime-trace-id",
                xray_trace_id(req.trace_id.as_deref()),
            ),
            ("lambent-attempt", req.attempt.to_string()),
        ];
        if let Some(event_id) = &req.event_id {
            h.push(("lambent-event-id", event_id.clone()));
        }
        if let Some(cc) = &req.client_context {
            h.push(("lambda-runtime-client-context", cc.clone()));
        }
        h
    }

    async fn run(&mut self, req: InvokeRequest) -> InvokeOutcome {
        if !self.usable {
            return InvokeOutcome::Crash {
                detail: format!("instance of `{}` is no longer usable", self.name),
            };
        }
        let (tx, rx) = oneshot::channel();
        {
            let Ok(mut slots) = self.shared.state.lock() else {
                return InvokeOutcome::Crash {
                    detail: "instance state poisoned".into(),
                };
            };
            if let Some(early) = slots.init_error.take() {
                drop(slots);
                return self.outcome(early);
            }
            slots.inflight = Some((req.request_id.clone(), tx));
        }
        let headers = self.headers(&req);
        let started = now_ms();
        let budget =
            std::time::Duration::from_millis(u64::try_from(req.deadline_ms - started).unwrap_or(0));
        let next = NextInvocation {
            request_id: req.request_id.clone(),
            payload: Bytes::clone(&req.payload),
            headers,
        };
        let deadline = tokio::time::sleep(budget);
        tokio::pin!(deadline);
        tokio::select! {
            sent = self.next.send(next) => {
                if sent.is_err() {
                    return InvokeOutcome::Crash { detail: "runtime API endpoint stopped".into() };
                }
            }
            () = &mut deadline => {}
        }
        tokio::select! {
            reported = rx => match reported {
                // The node's clock decides: an answer after the deadline is a timeout,
                // however late the timer fired under load.
                Ok(_) if now_ms() > req.deadline_ms => {
                    self.kill();
                    InvokeOutcome::Timeout { after_ms: self.timeout_ms }
                }
                Ok(r) => self.outcome(r),
                Err(_) => InvokeOutcome::Crash { detail: "runtime process vanished".into() },
            },
            () = &mut deadline => {
                self.kill();
                if let Ok(mut slots) = self.shared.state.lock() {
                    slots.inflight = None;
                }
                InvokeOutcome::Timeout { after_ms: self.timeout_ms }
            }
        }
    }

    fn outcome(&mut self, reported: Reported) -> InvokeOutcome {
        match reported {
            Reported::Response(body) => InvokeOutcome::Success(body),
            Reported::Error(report) => InvokeOutcome::FunctionError(report),
            Reported::InitError(report) => {
                self.kill();
                InvokeOutcome::InitError(report)
            }
            Reported::Exited(detail) => {
                self.kill();
                InvokeOutcome::Crash { detail }
            }
        }
    }
}

/// SIGKILLs the instance's process group while its leader is not reaped yet (so the
/// group id cannot belong to anyone else): the watcher clears the id, under the same
/// lock, before it reaps.
fn kill_group(group: &Mutex<Option<Pid>>) {
    if let Some(pgid) = *group.lock().unwrap_or_else(|p| p.into_inner()) {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// cgroup limits for an instance: its memory (plus the runtime's headroom, and
/// counting `/tmp` and `/dev/shm`), Lambda's 1024 processes and threads, and CPU in
/// proportion to memory as Lambda gives it (one core at 1,769 MB) — at least half a
/// core, so a small function still starts quickly (a burst allowance covers a cold
/// start), at most the node's cores. Every instance gets the same weight: the quota
/// already gives a bigger function more, and under contention a small function's
/// latency should not lose to a big one's hog (which, while it uses its whole quota,
/// runs in the idle class: `sandbox::cpu_watch`).
fn cgroup_limits(memory_mb: u32) -> sandbox::Limits {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let quota = (u64::from(memory_mb) * 100_000 / 1769).clamp(50_000, cores * 100_000);
    sandbox::Limits {
        memory_bytes: (u64::from(memory_mb) + 64) << 20,
        max_pids: 1024,
        cpu_quota_us: quota,
        cpu_shares: 1024,
    }
}

/// The plan that makes a spare sandbox this function's: its code, the interpreter's
/// installation (where the system's directories do not hold it already), a resolver
/// for a `net` grant, and the command.
fn sandbox_plan(
    launch: &Launch,
    system_dirs: &[PathBuf],
    scratch: &std::path::Path,
    env: Vec<(String, String)>,
    data_limit: u64,
) -> Plan {
    let mut binds: Vec<Bind> = Vec::new();
    let mut add = |source: PathBuf, target: String| {
        let path = std::path::Path::new(&target);
        let covered = system_dirs.iter().any(|d| path.starts_with(d))
            || binds.iter().any(|b| path.starts_with(&b.target));
        if !covered && source.exists() {
            binds.push(Bind {
                source,
                target,
                device: false,
            });
        }
    };
    add(launch.config.code_dir.clone(), TASK_ROOT.into());
    for dir in &launch.command.binds {
        add(dir.clone(), dir.display().to_string());
    }
    let net = launch.config.spec.grants_net();
    if net {
        // Names resolve through slirp4netns's forwarder; the host's resolver (often
        // on its loopback) is out of reach.
        let resolv = scratch.join("resolv.conf");
        let host_has_one = std::fs::symlink_metadata("/etc/resolv.conf").is_ok_and(|m| m.is_file());
        if host_has_one
            && std::fs::write(&resolv, format!("nameserver {}\n", sandbox::slirp::DNS)).is_ok()
        {
            binds.push(Bind {
                source: resolv,
                target: "/etc/resolv.conf".into(),
                device: false,
            });
        }
    }
    Plan {
        binds,
        nofile: 1024,
        data_bytes: data_limit,
        connect_port: (!net).then_some(RUNTIME_API_PORT),
        firewall: None,
        program: launch.command.program.display().to_string(),
        args: launch
            .command
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        env,
        cwd: TASK_ROOT.into(),
    }
}

/// RLIMIT_DATA for an instance: the function's memory plus room for the runtime
/// itself (V8 reserves writable memory generously, so Node gets more).
/// The pre-started runtime a cold start of `runtime` can use, if any.
fn prestart_kind(runtime: &RuntimeKind) -> Option<sandbox::plan::PrestartKind> {
    match runtime {
        RuntimeKind::Python { .. } => Some(sandbox::plan::PrestartKind::Python),
        RuntimeKind::Node { .. } => Some(sandbox::plan::PrestartKind::Node),
        RuntimeKind::Provided { .. } | RuntimeKind::Wasm { .. } => None,
    }
}

fn data_limit_bytes(runtime: &RuntimeKind, memory_mb: u32) -> u64 {
    let headroom_mb = match runtime {
        RuntimeKind::Node { .. } => 1024,
        _ => 64,
    };
    (u64::from(memory_mb) + headroom_mb) * 1024 * 1024
}

/// X-Ray's trace header from a W3C `traceparent` (`00-<trace>-<span>-<flags>`), or a fresh one.
fn xray_trace_id(traceparent: Option<&str>) -> String {
    let parts: Vec<&str> = traceparent.unwrap_or_default().split('-').collect();
    if let [_, trace, span, flags] = parts.as_slice()
        && trace.len() == 32
        && span.len() == 16
    {
        let sampled = u8::from_str_radix(flags, 16).map(|f| f & 1).unwrap_or(0);
        return format!(
            "Root=1-{}-{};Parent={span};Sampled={sampled}",
            &trace[..8],
            &trace[8..]
        );
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{:08x}-{};Sampled=0", now_ms() / 1000, &id[..24])
}

#[async_trait]
impl Instance for ProcessInstance {
    async fn invoke(&mut self, request: InvokeRequest) -> InvokeResult {
        let started = std::time::Instant::now();
        let outcome = self.run(request).await;
        let duration = started.elapsed();
        let logs = self.capture.take().await;
        InvokeResult {
            outcome,
            logs,
            duration,
        }
    }

    fn is_usable(&self) -> bool {
        self.usable && !self.watcher.is_finished()
    }

    async fn shutdown(mut self: Box<Self>) {
        self.kill();
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        self.kill();
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_becomes_an_xray_header() {
        let h = xray_trace_id(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(
            h,
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        );
        assert!(xray_trace_id(None).starts_with("Root=1-"));
    }
}
