//! The two fences a function process puts up on itself before it executes the
//! runtime: Landlock (file access, TCP ports, signals) and a seccomp filter.

use super::plan::{Plan, RUNTIME_ROOT, SYSTEM_READABLE, TASK_ROOT, prestart_readable};
use landlock::{
    ABI, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
    path_beneath_rules,
};
use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Landlock, best effort (a kernel without it leaves the namespaces as the fence):
/// read and execute what the root holds, write only `/tmp`, `/dev/shm` and the
/// character devices; no signals to processes outside the sandbox (the node);
/// without a network grant, TCP connects only to the Runtime API's port.
pub fn landlock(plan: &Plan, readable: &[String]) -> Result<(), landlock::RulesetError> {
    ruleset(plan, readable)?.restrict_self()?;
    Ok(())
}

/// The same ruleset as `landlock`, not yet applied: for a pre-started Python, which
/// applies it to itself (`landlock_restrict_self`). None where the kernel has no
/// Landlock.
pub fn landlock_ruleset(
    plan: &Plan,
    readable: &[String],
) -> Result<Option<std::os::fd::OwnedFd>, landlock::RulesetError> {
    Ok(ruleset(plan, readable)?.into())
}

/// For a runtime fenced before its plan is known (`PrestartKind::Node`): the ruleset
/// of a plan without network, reading where `plan::prestart_readable` says — what
/// `landlock` gives every plan that `Prestart::fits`.
pub fn prestart_landlock(readable: &[String]) -> Result<(), landlock::RulesetError> {
    build(
        prestart_readable(readable),
        Some(super::plan::RUNTIME_API_PORT),
    )?
    .restrict_self()?;
    Ok(())
}

fn ruleset(
    plan: &Plan,
    readable: &[String],
) -> Result<landlock::RulesetCreated, landlock::RulesetError> {
    let mut read: Vec<String> = SYSTEM_READABLE
        .into_iter()
        .chain([TASK_ROOT, RUNTIME_ROOT])
        .map(str::to_owned)
        .collect();
    read.extend(plan.binds.iter().map(|b| b.target.clone()));
    read.extend(readable.iter().cloned());
    build(read, plan.connect_port)
}

fn build(
    read: Vec<String>,
    connect_port: Option<u16>,
) -> Result<landlock::RulesetCreated, landlock::RulesetError> {
    let abi = ABI::V7;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .scope(Scope::from_all(abi))?;
    if connect_port.is_some() {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    let mut created = ruleset
        .create()?
        .add_rules(path_beneath_rules(["/"], AccessFs::ReadDir))?
        .add_rules(path_beneath_rules(&read, AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(
            ["/tmp", "/dev/shm", "/dev/null", "/dev/zero", "/dev/full"],
            AccessFs::from_all(abi),
        ))?;
    if let Some(port) = connect_port {
        created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    Ok(created)
}

/// System calls a function never needs: answered with EPERM. `clone3` answers ENOSYS
/// (its flags sit behind a pointer a filter cannot read), so the C library falls back
/// to `clone`, whose namespace flags are refused here.
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_fsconfig,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_vhangup,
    libc::SYS_lookup_dcookie,
];

const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The compiled filters (refusals, then `clone3`); installing them sets no_new_privs.
pub fn programs() -> Result<Vec<BpfProgram>, seccompiler::Error> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    denied.insert(libc::SYS_clone, clone_rules);
    let refusals = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok(vec![refusals.try_into()?, clone3.try_into()?])
}

/// Installs filters compiled by `programs` (compiled ahead, in a spare sandbox).
pub fn seccomp(programs: &[BpfProgram]) -> Result<(), seccompiler::Error> {
    for program in programs {
        seccompiler::apply_filter(program)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let programs = programs().unwrap();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }
}
