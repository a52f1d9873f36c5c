//! Seccomp filters of containers: which filter a container gets ([`Seccomp`]), skiff's
//! own `RuntimeDefault` profile ([`runtime_default`]), and the one adjustment a profile
//! needs before libcontainer 0.7 loads it ([`for_libcontainer`]).
//!
//! libcontainer turns the spec's `linux.seccomp` into a libseccomp filter in the
//! container's init, before it drops the capabilities (or, with `noNewPrivileges`, just
//! before it executes the container's process); `exec.rs` loads the same filter into
//! `kubectl exec` processes, which libcontainer 0.7 leaves unfiltered. What
//! libcontainer 0.7 does with a profile, which the profile below is written for:
//!
//! - the filter covers the native architecture plus the spec's `architectures`; a system
//!   call made through any other architecture's entry point meets libseccomp's bad-arch
//!   action, which kills the thread;
//! - a syscall name libseccomp does not know is skipped with a warning, and a name it
//!   knows but the architecture lacks (`vm86` on x86_64) is added for the architectures
//!   that have it, so one list serves every architecture;
//! - `errnoRet` unset means `EPERM`, for the rules and for `defaultErrnoRet`; a rule
//!   whose action equals the default action is dropped as redundant;
//! - comparisons on the same argument in one rule are split into separate rules, which
//!   the kernel ORs: a rule cannot say "not this and not that" about one argument;
//! - `SCMP_CMP_MASKED_EQ` takes its mask from `valueTwo` and the value compared from
//!   `value`, the other way round from runc and crun (mask in `value`), see
//!   [`for_libcontainer`].

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompArgBuilder, LinuxSeccompOperator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Which filter a container runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// No filter (`Unconfined`, an unset profile, privileged containers).
    #[default]
    Unconfined,
    /// skiff's default profile ([`runtime_default`]), adjusted to the container's
    /// capabilities.
    RuntimeDefault,
    /// A profile from the node's profile folder, as written there.
    Localhost(Box<LinuxSeccomp>),
}

/// Whether this kernel filters system calls: `/proc/self/status` (given as `status`) has
/// a `Seccomp:` line exactly when the kernel is built with `CONFIG_SECCOMP`.
pub fn supported(status: &str) -> bool {
    status.lines().any(|l| l.starts_with("Seccomp:"))
}

/// A group of system calls the default profile denies, and the capabilities that lift
/// the denial (any one of them).
struct Denied {
    names: &'static [&'static str],
    unless: &'static [&'static str],
}

/// What [`runtime_default`] denies with `EPERM`, besides the argument rules of `clone`,
/// `clone3` and `personality`. A group is lifted by the capability the kernel itself
/// checks for those calls: a container given that capability was meant to use them.
/// Groups with no capability are denied to every unprivileged container.
const DENIED: &[Denied] = &[
    // Loading code into the kernel. The last three left the kernel long ago; a
    // container has no business probing for them.
    Denied {
        names: &["init_module", "finit_module", "delete_module"],
        unless: &["CAP_SYS_MODULE"],
    },
    Denied {
        names: &["create_module", "query_module", "get_kernel_syms"],
        unless: &[],
    },
    // Replacing or stopping the machine's kernel.
    Denied {
        names: &["kexec_load", "kexec_file_load", "reboot"],
        unless: &["CAP_SYS_BOOT"],
    },
    // Host-wide state with no namespace: swap, process accounting, quotas, the clock.
    Denied {
        names: &[
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
        ],
        unless: &["CAP_SYS_ADMIN"],
    },
    Denied {
        names: &["acct"],
        unless: &["CAP_SYS_PACCT"],
    },
    Denied {
        names: &[
            "clock_settime",
            "clock_settime64",
            "settimeofday",
            "stime",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
        unless: &["CAP_SYS_TIME"],
    },
    // Kernel attack surface that is rarely needed inside a container.
    Denied {
        names: &["bpf"],
        unless: &["CAP_SYS_ADMIN", "CAP_BPF"],
    },
    Denied {
        names: &["perf_event_open"],
        unless: &["CAP_SYS_ADMIN", "CAP_PERFMON"],
    },
    Denied {
        names: &["userfaultfd"],
        unless: &["CAP_SYS_PTRACE"],
    },
    Denied {
        names: &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        unless: &[],
    },
    // The kernel keyring is not namespaced: keys would be shared with the host.
    Denied {
        names: &["keyctl", "add_key", "request_key"],
        unless: &[],
    },
    // File handles open any inode of a filesystem, bypassing the container's root.
    Denied {
        names: &["open_by_handle_at", "name_to_handle_at"],
        unless: &["CAP_DAC_READ_SEARCH"],
    },
    // Mounts and namespaces: what a container escape starts with.
    Denied {
        names: &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "fanotify_init",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
        ],
        unless: &["CAP_SYS_ADMIN"],
    },
    // Reading and writing other processes.
    Denied {
        names: &["ptrace", "process_vm_readv", "process_vm_writev"],
        unless: &["CAP_SYS_PTRACE"],
    },
    // Port I/O straight to the hardware.
    Denied {
        names: &["iopl", "ioperm"],
        unless: &["CAP_SYS_RAWIO"],
    },
    // Obsolete interfaces, kept by the kernel for old binaries only.
    Denied {
        names: &[
            "vm86",
            "vm86old",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
        ],
        unless: &[],
    },
];

/// The namespace flags of `clone(2)`: `CLONE_NEWNS`, `CLONE_NEWCGROUP`, `CLONE_NEWUTS`,
/// `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID` and `CLONE_NEWNET`.
const CLONE_NAMESPACES: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// The `personality(2)` values the default profile lets through: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, the last two together, and `0xffffffff`, which only asks.
pub const PERSONALITY_ALLOWED: [u64; 5] = [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The architectures a filter covers on this machine: the native one and the 32-bit
/// ones its kernel also runs, so that a 32-bit program works and meets the same rules
/// (an architecture left out is killed at its first system call).
pub fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "x86" => vec!["SCMP_ARCH_X86"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "arm" => vec!["SCMP_ARCH_ARM"],
        "riscv64" => vec!["SCMP_ARCH_RISCV64"],
        "s390x" => vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        "powerpc64" => vec!["SCMP_ARCH_PPC64", "SCMP_ARCH_PPC"],
        "loongarch64" => vec!["SCMP_ARCH_LOONGARCH64"],
        // libseccomp always covers the native architecture.
        _ => vec![],
    }
}

/// `EPERM` (1 on every architecture skiff builds for).
fn eperm() -> u32 {
    rustix::io::Errno::PERM.raw_os_error() as u32
}

/// skiff's `RuntimeDefault` profile for a container holding the capabilities `caps`
/// (`CAP_*` names).
///
/// It is a deny-list: everything is allowed (`SCMP_ACT_ALLOW`) except the calls named
/// in [`DENIED`] and the argument rules below, which fail with `EPERM`. An allow-list
/// (Docker's and containerd's profiles) must name every call a program might make, so
/// each new kernel interface fails in containers until the list catches up, and the
/// list is long enough that nobody reads it. A deny-list names exactly what is taken
/// away, so it can be reviewed, and new system calls keep working; what it must then
/// cover are the calls that reach host-wide state or kernel attack surface, which is
/// what container runtimes' default profiles block for unprivileged containers.
///
/// Besides [`DENIED`]:
///
/// - `clone` with a namespace flag is denied unless the container has
///   `CAP_SYS_ADMIN`, and `clone3` then fails with `ENOSYS`: its flags sit in memory
///   where a filter cannot read them, and C libraries fall back to `clone` on `ENOSYS`;
/// - `personality` is denied for every value but [`PERSONALITY_ALLOWED`]; see
///   [`personality_rules`] for how a deny-list says "all but these".
pub fn runtime_default(caps: &[String]) -> Result<LinuxSeccomp, serde_json::Error> {
    let has = |cap: &str| caps.iter().any(|c| c == cap);
    let mut syscalls = Vec::new();
    for group in DENIED {
        if group.unless.iter().any(|c| has(c)) {
            continue;
        }
        syscalls.push(json!({
            "names": group.names,
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": eperm(),
        }));
    }
    if !has("CAP_SYS_ADMIN") {
        for flag in CLONE_NAMESPACES {
            syscalls.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": eperm(),
                "args": [masked_eq(clone_flags_index(), flag, flag)],
            }));
        }
        syscalls.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": rustix::io::Errno::NOSYS.raw_os_error() as u32,
        }));
    }
    for (mask, value) in personality_rules() {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": eperm(),
            "args": [masked_eq(0, mask, value)],
        }));
    }
    let doc = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": syscalls,
    });
    serde_json::from_value(doc)
}

/// The argument of `clone` that holds its flags (the second on s390, the first
/// elsewhere).
fn clone_flags_index() -> u64 {
    if std::env::consts::ARCH.starts_with("s390") {
        1
    } else {
        0
    }
}

/// An OCI `SCMP_CMP_MASKED_EQ` comparison as runc and crun read it: argument `index`
/// ANDed with `mask` equals `value`.
fn masked_eq(index: u64, mask: u64, value: u64) -> Value {
    json!({"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"})
}

/// `(mask, value)` pairs, one rule each, that match exactly the `personality` values
/// (the low 32 bits, which is all the kernel reads) outside [`PERSONALITY_ALLOWED`].
///
/// One comparison per rule, as libseccomp requires, and the rules are ORed, so "none of
/// these values" has to be built from masked comparisons. The allowed values are 0,
/// all ones, and values made of bits 3 and 17 only. Any other value, seen as a ring of
/// 32 bits, has a run of set bits whose top bit `h` has a clear bit above it. If `h` is
/// neither 3 nor 17, the rule "bit `h` set, bit `h+1` clear" matches it, and no allowed
/// value: 0 and the values of bits 3 and 17 have no such bit `h` set, and all ones has
/// no clear bit. If every run tops out at bit 3 or 17 and a run is longer than one
/// bit, "bits 2 and 3 set, bit 4 clear" or "bits 16 and 17 set, bit 18 clear" matches.
/// What is left is runs of one bit at 3 and 17: the allowed values.
pub fn personality_rules() -> Vec<(u64, u64)> {
    let mut rules: Vec<(u64, u64)> = (0..32u32)
        .filter(|h| *h != 3 && *h != 17)
        .map(|h| {
            let bit = 1u64 << h;
            let above = 1u64 << ((h + 1) % 32);
            (bit | above, bit)
        })
        .collect();
    rules.push((0b111 << 2, 0b011 << 2));
    rules.push((0b111 << 16, 0b011 << 16));
    rules
}

/// The profile as libcontainer 0.7 must be given it to mean what it means to runc and
/// crun: the two numbers of each `SCMP_CMP_MASKED_EQ` comparison swapped.
///
/// In OCI profiles (Docker's, containerd's, the runtime-spec's examples) a masked
/// comparison carries its mask in `value` and the value compared in `valueTwo`, which
/// is how runc and crun hand them to libseccomp. libcontainer 0.7 passes `valueTwo` as
/// the mask and `value` as the value, so Docker's `clone` rule (mask 0x7E020000, value
/// 0) would never match there. The spec skiff writes is the swapped one; a unit test
/// loads a filter through libcontainer and checks the result, so a libcontainer that
/// changes this fails it.
pub fn for_libcontainer(mut profile: LinuxSeccomp) -> LinuxSeccomp {
    if let Some(syscalls) = profile.syscalls().clone() {
        let swapped = syscalls
            .into_iter()
            .map(|mut call| {
                if let Some(args) = call.args().clone() {
                    let args = args
                        .into_iter()
                        .map(|arg| {
                            if arg.op() != LinuxSeccompOperator::ScmpCmpMaskedEq {
                                return arg;
                            }
                            LinuxSeccompArgBuilder::default()
                                .index(arg.index())
                                .value(arg.value_two().unwrap_or(0))
                                .value_two(arg.value())
                                .op(arg.op())
                                .build()
                                .unwrap_or(arg)
                        })
                        .collect();
                    call.set_args(Some(args));
                }
                call
            })
            .collect();
        profile.set_syscalls(Some(swapped));
    }
    profile
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::spec::DEFAULT_CAPABILITIES;
    use oci_spec::runtime::LinuxSeccompAction;

    fn defaults() -> Vec<String> {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    }

    /// The names denied without any argument rule.
    fn denied(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.args().is_none() && s.action() == LinuxSeccompAction::ScmpActErrno)
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn denies_what_runtimes_deny_and_allows_the_rest() {
        let p = runtime_default(&defaults()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        let names = denied(&p);
        for name in [
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "reboot",
            "swapon",
            "swapoff",
            "acct",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "lookup_dcookie",
            "quotactl",
            "nfsservctl",
            "open_by_handle_at",
            "name_to_handle_at",
            "clock_settime",
            "settimeofday",
            "adjtimex",
            "clock_adjtime",
            "pivot_root",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "vm86",
            "iopl",
            "ioperm",
            "get_kernel_syms",
            "query_module",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "create_module",
            "fanotify_init",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} is denied");
        }
        for allowed in ["read", "write", "clone", "execve", "mkdirat", "chown"] {
            assert!(!names.iter().any(|n| n == allowed), "{allowed} is allowed");
        }
        let errnos: Vec<Option<u32>> = p
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names() != &["clone3"])
            .map(|s| s.errno_ret())
            .collect();
        assert!(errnos.iter().all(|e| *e == Some(1)), "EPERM: {errnos:?}");
        let clone3 = p
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["clone3"])
            .expect("clone3 is ruled");
        assert_eq!(clone3.errno_ret(), Some(38), "ENOSYS, so libc uses clone");
        let clone_rules = p
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names() == &["clone"])
            .count();
        assert_eq!(clone_rules, CLONE_NAMESPACES.len());
    }

    #[test]
    fn capabilities_lift_their_rules() {
        let mut caps = defaults();
        caps.push("CAP_SYS_ADMIN".into());
        caps.push("CAP_SYS_PTRACE".into());
        let p = runtime_default(&caps).unwrap();
        let names = denied(&p);
        for lifted in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "fanotify_init",
            "fsopen",
            "bpf",
            "perf_event_open",
            "ptrace",
            "process_vm_readv",
            "userfaultfd",
        ] {
            assert!(!names.iter().any(|n| n == lifted), "{lifted} is lifted");
        }
        assert!(
            !p.syscalls()
                .iter()
                .flatten()
                .any(|s| s.names() == &["clone"] || s.names() == &["clone3"]),
            "namespaces allowed with CAP_SYS_ADMIN"
        );
        for kept in ["keyctl", "reboot", "init_module", "io_uring_setup"] {
            assert!(names.iter().any(|n| n == kept), "{kept} stays denied");
        }
        assert_eq!(
            p.syscalls()
                .iter()
                .flatten()
                .filter(|s| s.names() == &["personality"])
                .count(),
            personality_rules().len()
        );
    }

    #[test]
    fn architectures_parse_and_cover_the_32_bit_entry_points() {
        let p = runtime_default(&defaults()).unwrap();
        let archs = serde_json::to_value(p.architectures()).unwrap();
        match std::env::consts::ARCH {
            "x86_64" => assert_eq!(
                archs,
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            ),
            "aarch64" => assert_eq!(archs, json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])),
            _ => {}
        }
        assert!(!p.syscalls().as_ref().unwrap().is_empty(), "it parsed");
    }

    /// The rules' verdict on one value, as the kernel's filter decides it.
    fn personality_denied(x: u64) -> bool {
        personality_rules()
            .iter()
            .any(|(mask, value)| x & mask == *value)
    }

    #[test]
    fn personality_rules_deny_exactly_the_other_values() {
        for ok in PERSONALITY_ALLOWED {
            assert!(!personality_denied(ok), "{ok:#x} is allowed");
        }
        // Every value made of the bits near the allowed ones and both ends of the word.
        let bits: Vec<u32> = (0..6).chain(14..21).chain(28..32).collect();
        for combo in 0u32..(1 << bits.len()) {
            let x: u64 = bits
                .iter()
                .enumerate()
                .filter(|(i, _)| combo & (1 << i) != 0)
                .map(|(_, b)| 1u64 << b)
                .sum();
            assert_eq!(
                personality_denied(x),
                !PERSONALITY_ALLOWED.contains(&x),
                "{x:#x}"
            );
        }
        // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, and all ones but one bit.
        for x in [0x0040000u64, 0x0400000, 0x0040008, 0xffff_fffe, 0x7fff_ffff] {
            assert!(personality_denied(x), "{x:#x}");
        }
    }

    #[test]
    fn masked_comparisons_are_swapped_for_libcontainer() {
        let p = runtime_default(&defaults()).unwrap();
        let before = p
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["personality"])
            .and_then(|s| s.args().clone())
            .unwrap();
        let swapped = for_libcontainer(p);
        let after = swapped
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["personality"])
            .and_then(|s| s.args().clone())
            .unwrap();
        assert_eq!(after[0].value(), before[0].value_two().unwrap());
        assert_eq!(after[0].value_two(), Some(before[0].value()));
    }

    #[test]
    fn the_kernel_says_whether_it_filters() {
        assert!(supported("Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n"));
        assert!(!supported("Name:\tx\nNoNewPrivs:\t0\n"));
    }

    /// The profile, through libcontainer and libseccomp into this kernel, on a thread of
    /// its own (a filter binds only the thread that loads it, and its children): the
    /// namespace calls fail with EPERM, `personality` lets through only the harmless
    /// values, and a masked comparison written as runc reads it matches what it should,
    /// which is what [`for_libcontainer`] is for.
    #[test]
    fn libcontainer_loads_it_and_the_kernel_enforces_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let mut profile = runtime_default(&defaults()).unwrap();
        // fchmod(fd, mode) denied when the mode's permission bits are exactly 0600.
        let mut calls = serde_json::to_value(profile.syscalls()).unwrap();
        calls.as_array_mut().unwrap().push(json!({
            "names": ["fchmod"], "action": "SCMP_ACT_ERRNO",
            "args": [masked_eq(1, 0o777, 0o600)],
        }));
        profile.set_syscalls(serde_json::from_value(calls).unwrap());
        let profile = for_libcontainer(profile);
        let outcome = std::thread::spawn(move || {
            rustix::thread::set_no_new_privs(true).map_err(|e| e.to_string())?;
            libcontainer::seccomp::initialize_seccomp(&profile).map_err(|e| e.to_string())?;
            let unshare = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER);
            let f = std::fs::File::open(&file).map_err(|e| e.to_string())?;
            let to_600 = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
            let to_640 = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640));
            use nix::sys::personality::{self, Persona};
            let personalities = (
                personality::get().is_ok(),
                personality::set(Persona::ADDR_NO_RANDOMIZE),
                personality::set(Persona::empty()).is_ok(),
            );
            Ok::<_, String>((
                unshare,
                to_600.map_err(|e| e.raw_os_error()),
                to_640.is_ok(),
                personalities,
            ))
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(
            outcome.0,
            Err(nix::errno::Errno::EPERM),
            "unshare is denied"
        );
        assert_eq!(outcome.1, Err(Some(1)), "the masked rule matched 0600");
        assert!(outcome.2, "and did not match 0640");
        let (query, no_aslr, linux) = outcome.3;
        assert!(query, "personality(0xffffffff) only asks");
        assert_eq!(no_aslr.map(|_| ()), Err(nix::errno::Errno::EPERM));
        assert!(linux, "PER_LINUX is allowed");
    }
}
