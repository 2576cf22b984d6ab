//! One runtime process and its Runtime API endpoint.

use crate::api::{self, NextInvocation, Reported, Shared, Slots};
use crate::capture::Capture;
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
pub(super) struct Launch {
    pub config: InstanceConfig,
    pub command: crate::Command,
    pub runtime_dir: PathBuf,
    pub instances_dir: PathBuf,
    pub region: String,
}

pub struct ProcessInstance {
    name: String,
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
}

impl ProcessInstance {
    pub(super) async fn spawn(launch: Launch) -> Result<Self, RuntimeError> {
        let spec = &launch.config.spec;
        let name = spec.name.clone();
        let spawn_err = |source: std::io::Error| RuntimeError::Spawn {
            function: name.clone(),
            source,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(spawn_err)?;
        let api_addr = listener.local_addr().map_err(spawn_err)?;
        let (next_tx, next_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            next: tokio::sync::Mutex::new(next_rx),
            state: Mutex::new(Slots::default()),
        });
        let app = api::router(shared.clone());
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

        let id = uuid::Uuid::new_v4().simple().to_string();
        let scratch = launch.instances_dir.join(&id);
        std::fs::create_dir_all(&scratch).map_err(spawn_err)?;
        let (mut capture, child_out) = Capture::new().map_err(spawn_err)?;
        if let Some(note) = &launch.command.note {
            capture.note(note);
        }
        let child_err = child_out.try_clone().map_err(spawn_err)?;

        let runtime_id = spec.runtime.declared();
        let mut cmd = tokio::process::Command::new(&launch.command.program);
        cmd.args(&launch.command.args)
            .current_dir(&launch.config.code_dir)
            .env_clear()
            // Refused at deploy; filtered again here so no spec can override them.
            .envs(
                spec.env
                    .iter()
                    .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str())),
            )
            .env("AWS_LAMBDA_RUNTIME_API", api_addr.to_string())
            .env("_HANDLER", &spec.handler)
            .env("LAMBDA_TASK_ROOT", &launch.config.code_dir)
            .env("LAMBDA_RUNTIME_DIR", &launch.runtime_dir)
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env(
                "AWS_LAMBDA_FUNCTION_VERSION",
                launch.config.version.to_string(),
            )
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_mb.to_string(),
            )
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", spec.name),
            )
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!(
                    "{}/[{}]{id}",
                    chrono::Utc::now().format("%Y/%m/%d"),
                    launch.config.version
                ),
            )
            .env("AWS_REGION", &launch.region)
            .env("AWS_DEFAULT_REGION", &launch.region)
            .env("AWS_EXECUTION_ENV", format!("AWS_Lambda_{runtime_id}"))
            .env("TZ", ":UTC")
            .env("LANG", "en_US.UTF-8")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TMPDIR", &scratch)
            .stdin(std::process::Stdio::null())
            .stdout(child_out)
            .stderr(child_err)
            .process_group(0)
            .kill_on_drop(true);
        cmd.envs(launch.command.env.iter().map(|(k, v)| (k, v)));
        let data_limit = data_limit_bytes(&spec.runtime, spec.memory_mb);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // system calls (setrlimit(2), prctl(2)), which are async-signal-safe; it
        // allocates nothing and touches no state shared with the parent.
        unsafe {
            cmd.pre_exec(move || {
                use nix::sys::resource::{Resource, setrlimit};
                setrlimit(Resource::RLIMIT_NOFILE, 1024, 1024)?;
                setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
                setrlimit(Resource::RLIMIT_DATA, data_limit, data_limit)?;
                // Die with the node, even by kill -9. (The signal follows the thread that
                // forked: instances are spawned from the runtime's worker threads, which
                // live as long as the node.)
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
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
            let detail = match status {
                Ok(status) => format!("runtime process exited: {status}"),
                Err(e) => format!("runtime process lost: {e}"),
            };
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
            group,
            next: next_tx,
            shared,
            capture,
            usable: true,
            scratch,
            server,
            watcher,
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
                    InvokeOutcome::Timeout { after_ms: u64::try_from(now_ms() - started).unwrap_or(0) }
                }
                Ok(r) => self.outcome(r),
                Err(_) => InvokeOutcome::Crash { detail: "runtime process vanished".into() },
            },
            () = &mut deadline => {
                self.kill();
                if let Ok(mut slots) = self.shared.state.lock() {
                    slots.inflight = None;
                }
                InvokeOutcome::Timeout { after_ms: u64::try_from(now_ms() - started).unwrap_or(0) }
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

/// RLIMIT_DATA for an instance: the function's memory plus room for the runtime
/// itself (V8 reserves writable memory generously, so Node gets more).
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
