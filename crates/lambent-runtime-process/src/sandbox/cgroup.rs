//! cgroup v1 limits for one instance: memory (shared mappings, `/dev/shm` and `/tmp`
//! pages are charged to it too), process count and CPU (a quota, and the idle class
//! while it uses the whole quota: `cpu_watch`). Each instance gets a
//! directory under `lambent/` beneath the node's own group in each controller.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::cpu_watch::CpuWatch;

/// The controllers used, and where this node's groups live in each.
#[derive(Debug, Clone)]
pub struct Cgroups {
    memory: PathBuf,
    pids: PathBuf,
    cpu: PathBuf,
    /// Demotes the instances that use their whole CPU quota.
    watch: CpuWatch,
}

/// The limits of one instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub max_pids: u32,
    /// CPU time per 100 ms period, microseconds (100_000 = one core).
    pub cpu_quota_us: u64,
    pub cpu_shares: u64,
}

impl Cgroups {
    /// Finds the memory, pids and cpu controllers (cgroup v1) and makes the node's
    /// parent groups; an error says which is missing.
    pub fn discover() -> Result<Self, String> {
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let find = |controller: &str| -> Result<PathBuf, String> {
            let relative = own
                .lines()
                .filter_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                    names
                        .split(',')
                        .any(|n| n == controller)
                        .then(|| path.to_owned())
                })
                .next()
                .ok_or_else(|| format!("no cgroup v1 `{controller}` controller"))?;
            let mount = Path::new("/sys/fs/cgroup").join(controller);
            let parent = mount.join(relative.trim_start_matches('/')).join("lambent");
            sweep(&parent);
            let dir = parent.join(format!("node-{}", std::process::id()));
            fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            Ok(dir)
        };
        Ok(Self {
            memory: find("memory")?,
            pids: find("pids")?,
            cpu: find("cpu")?,
            watch: CpuWatch::default(),
        })
    }

    /// Makes an instance's groups, with no limits yet (`InstanceCgroups::limit`).
    pub fn create(&self, id: &str) -> io::Result<InstanceCgroups> {
        let made = InstanceCgroups {
            dirs: vec![self.memory.join(id), self.pids.join(id), self.cpu.join(id)],
            watch: self.watch.clone(),
        };
        for dir in &made.dirs {
            fs::create_dir(dir)?;
        }
        Ok(made)
    }
}

/// Writes a control file this kernel may not have (swap accounting, CPU burst).
fn write_if_present(file: &Path, value: u64) -> io::Result<()> {
    if file.exists() {
        fs::write(file, value.to_string())?;
    }
    Ok(())
}

/// Removes the groups of nodes that are gone (killed without a chance to clean up):
/// their instances died with them, so the groups are empty. A live node's are kept.
fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let live = name
            .to_str()
            .and_then(|n| n.strip_prefix("node-"))
            .is_some_and(|pid| Path::new("/proc").join(pid).exists());
        if live || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(children) = fs::read_dir(entry.path()) {
            for child in children.flatten() {
                if child.path().is_dir() {
                    let _ = fs::remove_dir(child.path());
                }
            }
        }
        let _ = fs::remove_dir(entry.path());
    }
}

/// One instance's groups; removed (after killing anything left) when dropped.
#[derive(Debug)]
pub struct InstanceCgroups {
    dirs: Vec<PathBuf>,
    watch: CpuWatch,
}

impl InstanceCgroups {
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Sets the limits (cheap: no task moves).
    pub fn limit(&self, limits: Limits) -> io::Result<()> {
        let [memory, pids, cpu] = [&self.dirs[0], &self.dirs[1], &self.dirs[2]];
        // The memory limit first: memory+swap may never be below it.
        fs::write(
            memory.join("memory.limit_in_bytes"),
            limits.memory_bytes.to_string(),
        )?;
        // With swap accounting, swap may not extend the limit either.
        write_if_present(
            &memory.join("memory.memsw.limit_in_bytes"),
            limits.memory_bytes,
        )?;
        fs::write(pids.join("pids.max"), limits.max_pids.to_string())?;
        fs::write(cpu.join("cpu.cfs_period_us"), "100000")?;
        fs::write(
            cpu.join("cpu.cfs_quota_us"),
            limits.cpu_quota_us.to_string(),
        )?;
        // Unused quota carries over up to one period's worth: a cold start's burst
        // is not throttled; a hog is.
        write_if_present(&cpu.join("cpu.cfs_burst_us"), limits.cpu_quota_us)?;
        fs::write(cpu.join("cpu.shares"), limits.cpu_shares.to_string())?;
        // A hog is demoted to the idle class while it uses its whole quota.
        self.watch.add(cpu, limits.cpu_shares);
        Ok(())
    }

    /// Whether the kernel killed a process of the instance for reaching its memory
    /// limit (`oom_kill` in `memory.oom_control`; `memory.failcnt` stays 0 when the
    /// memory+swap limit is the one reached).
    pub fn hit_memory_limit(&self) -> bool {
        self.dirs
            .first()
            .and_then(|m| fs::read_to_string(m.join("memory.oom_control")).ok())
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }
}

impl Drop for InstanceCgroups {
    fn drop(&mut self) {
        if let Some(cpu) = self.dirs.get(2) {
            self.watch.remove(cpu);
        }
        for dir in &self.dirs {
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                // Still populated: kill what is left (the PID namespace's teardown
                // normally did) and try again.
                if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
}
