//! The launcher: the program the node starts for a sandboxed instance. It runs as a
//! fresh, single-threaded process (the node's binary re-executed, or
//! `lambent-sandbox`), so it can set up namespaces with ordinary code instead of in a
//! `pre_exec` hook. It talks to the node over its standard input, a Unix socket
//! (`channel`).
//!
//! Three processes:
//! - the launcher (host root, in the instance's cgroups) reads the prelude, builds
//!   the root skeleton, clones the sandbox's first process into new user, mount, PID,
//!   IPC, UTS and network namespaces, writes its id maps and waits for it;
//! - that first process (PID 1 inside, privileged only in its own user namespace)
//!   mounts what every sandbox has, brings up its loopback, binds the Runtime API's
//!   listener and passes it to the node — and waits. This much is done ahead of need
//!   (a spare). When the plan comes, it binds the function's code and interpreter,
//!   pivots into the new root, drops to the namespace's root, starts the function and
//!   reaps every process until the function's own exits — then it exits, and the
//!   kernel kills whatever else is left in the PID namespace (daemons included);
//! - the function's process drops to the unprivileged id, restricts itself with
//!   Landlock and seccomp, and executes the runtime.

use super::channel;
use super::filter;
use super::plan::{
    Assignment, Bind, INSIDE_ID, PRESTART_FD, Plan, Prelude, Prestart, PrestartKind,
    RUNTIME_API_PORT, Ready,
};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A step of the set-up that failed, and why.
#[derive(Debug)]
struct Failed(String);

trait Step<T> {
    fn step(self, what: &str) -> Result<T, Failed>;
}

impl<T, E: std::fmt::Display> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, Failed> {
        self.map_err(|e| Failed(format!("{what}: {e}")))
    }
}

/// Exit status of a launcher whose set-up failed (the reason is on stderr, which is
/// the instance's log).
const SETUP_FAILED: i32 = 125;

/// The launcher's entry point: reads the plan from standard input, runs the sandbox,
/// and exits with the function process's status.
pub fn launcher_main() -> ! {
    let code = match launch() {
        Ok(code) => code,
        Err(Failed(why)) => {
            let _ = writeln!(std::io::stderr(), "lambent sandbox: {why}");
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

/// `lambent-sandbox --probe`: can this host build a sandbox? Exits 0 if a process
/// could be cloned into new namespaces and given an id map.
pub fn probe_main() -> ! {
    let code = match probe() {
        Ok(()) => 0,
        Err(Failed(why)) => {
            let _ = writeln!(std::io::stderr(), "{why}");
            1
        }
    };
    std::process::exit(code)
}

fn probe() -> Result<(), Failed> {
    nix::unistd::setgroups(&[]).step("dropping supplementary groups")?;
    let (child, go) = clone_sandboxed(CloneFlags::CLONE_NEWNET, || 0)?;
    map_ids(child, 65_534, 65_534)?;
    drop(go);
    match wait_exit(child)? {
        0 => Ok(()),
        code => Err(Failed(format!("probe process exited {code}"))),
    }
}

/// The control socket: this process's standard input, a Unix socket to the node.
fn control() -> std::mem::ManuallyDrop<fs::File> {
    // SAFETY: descriptor 0 is open for the whole life of the process (the node made
    // it the launcher's stdin); ManuallyDrop keeps this handle from closing it.
    std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(0) })
}

fn launch() -> Result<i32, Failed> {
    let prelude: Prelude = channel::read_message(&mut *control()).step("reading the prelude")?;
    let pid = std::process::id().to_string();
    for cgroup in &prelude.cgroups {
        fs::write(cgroup.join("cgroup.procs"), &pid)
            .step(&format!("joining cgroup {}", cgroup.display()))?;
    }
    // Root's supplementary groups would otherwise follow the function into its user
    // namespace, where they can no longer be dropped.
    nix::unistd::setgroups(&[]).step("dropping supplementary groups")?;
    build_skeleton(&prelude.root, &prelude.binds, &prelude.links)?;
    for dir in ["proc", "dev", "tmp", ".old"] {
        fs::create_dir_all(prelude.root.join(dir)).step("creating the root skeleton")?;
    }

    let (child, go) = clone_sandboxed(CloneFlags::CLONE_NEWNET, || match sandbox_init(&prelude) {
        Ok(code) => code,
        Err(Failed(why)) => {
            let _ = writeln!(std::io::stderr(), "lambent sandbox: {why}");
            SETUP_FAILED
        }
    })?;
    map_ids(child, prelude.outside_uid, prelude.outside_gid)?;
    let ready = Ready {
        init_pid: u32::try_from(child.as_raw()).unwrap_or_default(),
    };
    // Before the init may go on: this message precedes the listener it passes.
    channel::write_message(&mut *control(), &ready).step("reporting the sandbox")?;
    drop(go);
    wait_exit(child)
}

/// Clones a process into new user, mount, PID, IPC and UTS namespaces (and `extra`);
/// it runs `body` once the returned pipe end is closed (after its id maps are written).
fn clone_sandboxed(extra: CloneFlags, body: impl FnMut() -> i32) -> Result<(Pid, OwnedFd), Failed> {
    let (wait_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step("creating a pipe")?;
    let go_raw = go_w.as_raw_fd();
    let mut body = body;
    let mut wait_r = Some(wait_r);
    // The init runs all of its set-up on this stack (zeroed pages cost nothing until used).
    let mut stack = vec![0u8; 8 * 1024 * 1024];
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | extra;
    let callback = Box::new(move || {
        // Wait until the parent has written the id maps: it closes its end (this
        // process's copy of that end is closed first, or the wait would never end).
        let _ = nix::unistd::close(go_raw);
        if let Some(r) = wait_r.take() {
            let mut file = fs::File::from(r);
            let mut byte = [0u8; 1];
            let _ = file.read(&mut byte);
        }
        // Die with the launcher.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        body() as isize
    });
    // SAFETY: this process is single-threaded (the launcher runs before any runtime
    // or thread is started), so the child's copy of memory holds no lock another
    // thread owned; the stack outlives the call, and the child exits through `body`.
    let child =
        unsafe { nix::sched::clone(callback, &mut stack, flags, Some(Signal::SIGCHLD as i32)) }
            .step("creating the sandbox's namespaces")?;
    Ok((child, go_w))
}

/// Maps the sandbox's two inside ids to unprivileged outside ids: root of the user
/// namespace (the sandbox's init, once its set-up is done) to `uid`, the function's
/// id to `uid + 1`. Neither is anyone on the host.
fn map_ids(child: Pid, uid: u32, gid: u32) -> Result<(), Failed> {
    let proc = PathBuf::from(format!("/proc/{child}"));
    let map = |outside: u32| format!("0 {outside} 1\n{INSIDE_ID} {} 1\n", outside + 1);
    fs::write(proc.join("setgroups"), "deny").step("writing setgroups")?;
    fs::write(proc.join("uid_map"), map(uid)).step("writing uid_map")?;
    fs::write(proc.join("gid_map"), map(gid)).step("writing gid_map")?;
    Ok(())
}

fn wait_exit(child: Pid) -> Result<i32, Failed> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Failed(format!("waiting for the sandbox: {e}"))),
        }
    }
}

/// Directories and empty files the binds mount over, on the host's disk (so a
/// process that is still the host's root as owner can create them), plus links.
fn build_skeleton(root: &Path, binds: &[Bind], links: &[(String, String)]) -> Result<(), Failed> {
    for bind in binds {
        let target = inside(root, &bind.target);
        if bind.source.is_dir() {
            fs::create_dir_all(&target).step("creating a mount point")?;
        } else if fs::symlink_metadata(&target).is_err() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).step("creating a mount point")?;
            }
            fs::write(&target, b"").step("creating a file mount point")?;
        }
    }
    for (link, to) in links {
        let path = root.join(link);
        if fs::symlink_metadata(&path).is_err() {
            std::os::unix::fs::symlink(to, &path).step("creating a root link")?;
        }
    }
    Ok(())
}

fn inside(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

fn mount_binds(root: &Path, binds: &[Bind]) -> Result<(), Failed> {
    for bind in binds {
        let target = inside(root, &bind.target);
        if bind.device {
            bind_device(&bind.source, &target)?;
        } else {
            bind_read_only(&bind.source, &target)?;
        }
    }
    Ok(())
}

/// PID 1 of the sandbox: assembles what every sandbox has, hands the node its
/// Runtime API listener, waits for the plan, finishes the root, starts the function,
/// reaps.
fn sandbox_init(prelude: &Prelude) -> Result<i32, Failed> {
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .step("making mounts private")?;
    let root = &prelude.root;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(root),
        root,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .step("binding the new root")?;
    mount_binds(root, &prelude.binds)?;
    let tmpfs = |target: &str, size_mb: u32, mode: &str| {
        let data = format!("size={size_mb}m,mode={mode}");
        mount(
            Some("tmpfs"),
            &inside(root, target),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .step(&format!("mounting {target}"))
    };
    tmpfs("/tmp", prelude.tmp_mb, "1777")?;
    fs::create_dir_all(inside(root, "/dev/shm")).step("creating /dev/shm")?;
    tmpfs("/dev/shm", prelude.shm_mb, "1777")?;
    mount(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .step("mounting /proc")?;
    for (link, to) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        let path = root.join(link);
        if fs::symlink_metadata(&path).is_err() {
            std::os::unix::fs::symlink(to, &path).step("linking /dev")?;
        }
    }
    nix::unistd::sethostname("lambent").step("setting the host name")?;
    // The Runtime API's listener, on this namespace's own loopback: only the
    // instance reaches it. The node serves it.
    super::netns::loopback_up().step("bringing up the loopback")?;
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, RUNTIME_API_PORT))
        .step("binding the Runtime API")?;
    channel::send_fd(0, listener.as_raw_fd()).step("handing over the Runtime API")?;
    drop(listener);

    let filters = filter::programs().step("compiling the seccomp filter")?;
    let readable: Vec<String> = prelude.binds.iter().map(|b| b.target.clone()).collect();
    let mut prestarted = match &prelude.prestart {
        Some(pre) => Some(prestart(prelude, pre, &readable, &filters)?),
        None => None,
    };

    // Ready ahead of need: the rest waits for a function.
    let plan: Plan = channel::read_message(&mut *control()).step("reading the plan")?;
    // A pre-started runtime this plan can use must be in the new root before the
    // host's root is detached, and done starting (its imports touch the root's mount,
    // which a read-only remount then finds busy): it says so once it waits for its
    // assignment. A spare can be taken the moment it is ready, before that. One the
    // plan cannot use goes at once.
    let fits = prelude
        .prestart
        .as_ref()
        .is_some_and(|pre| pre.fits(&plan, &readable));
    if let Some((pid, channel)) = prestarted.take() {
        if fits && prestart_waiting(&channel) {
            prestarted = Some((pid, channel));
        } else {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
    build_skeleton(root, &plan.binds, &[])?;
    mount_binds(root, &plan.binds)?;
    nix::unistd::pivot_root(root, &root.join(".old")).step("pivoting into the new root")?;
    nix::unistd::chdir("/").step("entering the new root")?;
    umount2("/.old", MntFlags::MNT_DETACH).step("detaching the host's root")?;
    remount_read_only(Path::new("/"))?;
    // The set-up needed the host's root as owner (to reach and bind host paths); from
    // here the init is the namespace's root, an unprivileged id on the host.
    let id = Gid::from_raw(0);
    nix::unistd::setresgid(id, id, id).step("switching the init's group")?;
    let id = Uid::from_raw(0);
    nix::unistd::setresuid(id, id, id).step("switching the init's user")?;
    // A change of credentials clears the parent-death signal: set it again, or the
    // init (and with it the whole sandbox) would outlive a launcher killed with its
    // node.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).step("asking to die with the launcher")?;
    if let Some(rules) = &plan.firewall {
        // Now root of the namespace (an exec as the host's unmapped root would keep no
        // capability), with the sandbox's `/usr` in place.
        apply_firewall(rules)?;
    }

    if let Some((pid, channel)) = prestarted {
        let kind = prelude.prestart.as_ref().map(|pre| pre.kind);
        match assign(&plan, kind, &readable, pid, &channel) {
            Ok(()) => {
                drop(channel);
                let _ = nix::unistd::close(0);
                return reap_until(pid);
            }
            Err(Failed(why)) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "lambent sandbox: the pre-started runtime could not be used ({why}); starting the runtime afresh"
                );
            }
        }
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }

    // SAFETY: this process is single-threaded (a clone of the single-threaded
    // launcher), so the forked child may allocate and run ordinary code.
    match unsafe { fork() }.step("starting the function process")? {
        ForkResult::Child => {
            let Err(Failed(why)) = exec_function(&plan, &readable, &filters);
            let _ = writeln!(std::io::stderr(), "lambent sandbox: {why}");
            std::process::exit(SETUP_FAILED);
        }
        ForkResult::Parent { child } => {
            // The node's end of the control socket is not the function's business.
            let _ = nix::unistd::close(0);
            reap_until(child)
        }
    }
}

/// Starts `pre` in its own process: in the sandbox's root, as the function's id, under
/// seccomp, waiting on a socket (its descriptor `PRESTART_FD`) for `assign`. Returns
/// its pid and this end of the socket.
fn prestart(
    prelude: &Prelude,
    pre: &Prestart,
    readable: &[String],
    filters: &[seccompiler::BpfProgram],
) -> Result<(Pid, OwnedFd), Failed> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    // Datagram boundaries: the assignment arrives whole, with its descriptor.
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .step("making the pre-started runtime's socket")?;
    // SAFETY: this process is single-threaded (see `sandbox_init`).
    match unsafe { fork() }.step("pre-starting the runtime")? {
        ForkResult::Child => {
            drop(ours);
            let Err(Failed(why)) = exec_prestart(prelude, pre, readable, theirs, filters);
            let _ = writeln!(std::io::stderr(), "lambent sandbox: {why}");
            std::process::exit(SETUP_FAILED);
        }
        ForkResult::Parent { child } => Ok((child, ours)),
    }
}

/// In the pre-started runtime's process: the steps of `exec_function` that do not
/// depend on the function. It enters the sandbox's root with `chroot` (the plan's
/// `pivot_root` later makes that root the namespace's, with this process in it);
/// the working directory and the environment come with the assignment, the limits
/// that depend on the function are set then from outside, and Landlock comes with the
/// assignment (Python) or now, the ruleset of any plan without network (Node).
fn exec_prestart(
    prelude: &Prelude,
    pre: &Prestart,
    readable: &[String],
    channel: OwnedFd,
    filters: &[seccompiler::BpfProgram],
) -> Result<std::convert::Infallible, Failed> {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    nix::unistd::chroot(&prelude.root).step("entering the sandbox's root")?;
    nix::unistd::chdir("/").step("entering the sandbox's root")?;
    let null = fs::File::open("/dev/null").step("opening /dev/null")?;
    nix::unistd::dup2_stdin(&null).step("redirecting stdin")?;
    drop(null);
    if channel.as_raw_fd() == PRESTART_FD {
        // Already in place: only its close-on-exec flag must go.
        nix::fcntl::fcntl(
            &channel,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .step("passing the assignment socket")?;
        std::mem::forget(channel);
    } else {
        // SAFETY: descriptor PRESTART_FD is not otherwise owned in this process (the
        // node's descriptors are close-on-exec and this one is made for the
        // runtime); the new OwnedFd is forgotten, so nothing here closes it.
        let placed = unsafe { nix::unistd::dup2_raw(&channel, PRESTART_FD) }
            .step("passing the assignment socket")?;
        std::mem::forget(placed);
        drop(channel);
    }
    become_the_function()?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .step("disabling core dumps")?;
    if pre.kind == PrestartKind::Node {
        filter::prestart_landlock(readable).step("restricting with Landlock")?;
    }
    filter::seccomp(filters).step("installing the seccomp filter")?;
    let mut env = pre.env.clone();
    env.push(("LAMBENT_PRESTART_FD".into(), PRESTART_FD.to_string()));
    execute(&pre.program, &pre.args, &env)
}

/// How long a plan waits for a pre-started runtime still starting before it starts
/// the runtime afresh instead.
const PRESTART_PATIENCE_MS: u16 = 5_000;

/// Whether the pre-started runtime reported that it waits for its assignment (one
/// byte), rather than failing or hanging.
fn prestart_waiting(channel: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLIN)];
    if !matches!(
        poll(&mut fds, PollTimeout::from(PRESTART_PATIENCE_MS)),
        Ok(1)
    ) {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(nix::unistd::read(channel, &mut byte), Ok(1))
}

/// Hands a pre-started runtime its function: sets its limits (`prlimit`, as the
/// namespace's root), then sends the environment and working directory and, to a
/// Python, the Landlock ruleset it restricts itself with before it imports any of the
/// function's code (a Node was fenced before it was executed).
fn assign(
    plan: &Plan,
    kind: Option<PrestartKind>,
    readable: &[String],
    pid: Pid,
    channel: &OwnedFd,
) -> Result<(), Failed> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use rustix::process::{Resource, Rlimit, prlimit};
    let target = rustix::process::Pid::from_raw(pid.as_raw());
    for (resource, value) in [
        (Resource::Nofile, plan.nofile),
        (Resource::Data, plan.data_bytes),
    ] {
        let limit = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        prlimit(target, resource, limit).step("limiting the pre-started runtime")?;
    }
    let ruleset = match kind {
        Some(PrestartKind::Python) => {
            filter::landlock_ruleset(plan, readable).step("building the Landlock ruleset")?
        }
        _ => None,
    };
    let message = serde_json::to_vec(&Assignment {
        env: plan.env.clone(),
        cwd: plan.cwd.clone(),
    })
    .step("encoding the assignment")?;
    let fds: Vec<i32> = ruleset.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        channel.as_raw_fd(),
        &[std::io::IoSlice::new(&message)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .step("sending the assignment")?;
    Ok(())
}

/// Loads an nftables ruleset into the sandbox's network namespace.
fn apply_firewall(rules: &str) -> Result<(), Failed> {
    let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            Failed(
                "a grant by address needs nft (install it, e.g. `apt-get install nftables`)".into(),
            )
        })?;
    let mut child = std::process::Command::new(nft)
        .args(["-f", "-"])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .spawn()
        .step("starting nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .step("writing the ruleset")?;
    }
    let status = child.wait().step("waiting for nft")?;
    if status.success() {
        Ok(())
    } else {
        Err(Failed(format!(
            "nft refused the sandbox's ruleset ({status})"
        )))
    }
}

/// Reaps every process of the namespace (orphans come to PID 1) until `function`
/// exits, and returns its status.
fn reap_until(function: Pid) -> Result<i32, Failed> {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == function => return Ok(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == function => {
                return Ok(128 + signal as i32);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Failed(format!("reaping: {e}"))),
        }
    }
}

/// In the function's process: drop to the unprivileged id, fence, execute.
fn exec_function(
    plan: &Plan,
    readable: &[String],
    filters: &[seccompiler::BpfProgram],
) -> Result<std::convert::Infallible, Failed> {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Its stdin is /dev/null, not the node's control socket.
    let null = fs::File::open("/dev/null").step("opening /dev/null")?;
    nix::unistd::dup2_stdin(&null).step("redirecting stdin")?;
    drop(null);
    become_the_function()?;
    {
        use nix::sys::resource::{Resource, setrlimit};
        setrlimit(Resource::RLIMIT_NOFILE, plan.nofile, plan.nofile).step("limiting files")?;
        setrlimit(Resource::RLIMIT_CORE, 0, 0).step("disabling core dumps")?;
        setrlimit(Resource::RLIMIT_DATA, plan.data_bytes, plan.data_bytes)
            .step("limiting memory")?;
    }
    nix::unistd::chdir(plan.cwd.as_str()).step("entering the code directory")?;
    filter::landlock(plan, readable).step("restricting with Landlock")?;
    filter::seccomp(filters).step("installing the seccomp filter")?;
    execute(&plan.program, &plan.args, &plan.env)
}

/// Drops to the function's unprivileged id with no capability left to gain, and asks
/// again to die with the init (a change of credentials clears that; the PID
/// namespace's end would take the process down anyway).
fn become_the_function() -> Result<(), Failed> {
    drop_bounding_set();
    let id = Gid::from_raw(INSIDE_ID);
    nix::unistd::setresgid(id, id, id).step("switching group")?;
    let id = Uid::from_raw(INSIDE_ID);
    nix::unistd::setresuid(id, id, id).step("switching user")?;
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    Ok(())
}

/// Executes `program` with exactly `args` and `env`.
fn execute(
    program: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<std::convert::Infallible, Failed> {
    let cstr = |s: &str| CString::new(s).step("a NUL in the command");
    let path = cstr(program)?;
    let mut argv = vec![path.clone()];
    for a in args {
        argv.push(cstr(a)?);
    }
    let envp = env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    nix::unistd::execve(&path, &argv, &envp).step(&format!("executing {program}"))
}

/// Empties the capability bounding set, so nothing the function executes can hold a
/// capability, whatever its file says (no_new_privs, set with seccomp, agrees).
fn drop_bounding_set() {
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers; numbers
        // past the kernel's last capability fail with EINVAL, which ends the loop.
        if unsafe { nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            break;
        }
    }
}

/// Binds `source` at `target` read-only, nosuid and nodev; keeps the flags the
/// kernel locks on the source mount (a remount may not clear them).
fn bind_read_only(source: &Path, target: &Path) -> Result<(), Failed> {
    let none = None::<&str>;
    mount(
        Some(source),
        target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .step(&format!("binding {}", source.display()))?;
    remount_read_only(target)
}

/// Binds a device node writable (a read-only or nodev mount would refuse writes to
/// `/dev/null`), without exec or setuid.
fn bind_device(source: &Path, target: &Path) -> Result<(), Failed> {
    let none = None::<&str>;
    mount(Some(source), target, none, MsFlags::MS_BIND, none)
        .step(&format!("binding {}", source.display()))?;
    remount(target, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)
}

fn remount_read_only(target: &Path) -> Result<(), Failed> {
    remount(
        target,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )
}

/// Remounts a bind with `wanted` plus the flags the kernel locks on it.
fn remount(target: &Path, wanted: MsFlags) -> Result<(), Failed> {
    let locked = statvfs(target)
        .map(|s| s.flags())
        .step(&format!("reading the flags of {}", target.display()))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | wanted;
    for (has, keep) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if locked.contains(has) {
            flags |= keep;
        }
    }
    let none = None::<&str>;
    mount(none, target, none, flags, none).step(&format!("remounting {}", target.display()))
}
