//! cgroup v2 for local peers: one cgroup per peer, when this process may
//! make them.
//!
//! A process group is not a peer's boundary: a daemon it starts with
//! `setsid` leaves the group, goes unsampled and outlives the peer. A cgroup
//! holds every process the peer ever forks, counts the CPU of those that
//! exited, and is killed as one (`cgroup.kill`). So, when a cgroup v2
//! hierarchy is mounted and the dispatcher's own cgroup (or `--cgroup DIR`,
//! e.g. a systemd unit's delegated one) is writable, each peer runs in
//! `<base>/dispatcher-<data dir hash>/job<j>-peer<n>`, entered between fork
//! and exec so that no process of the peer starts outside it. Otherwise
//! peers stay plain process groups (see `usage`).
//!
//! Memory comes from `memory.stat` when the memory controller reaches the
//! peer's cgroup, else from `/proc` over the cgroup's processes (a hybrid
//! host, cgroup v1 owning memory, gives v2 no memory controller).

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where peers' cgroups are made.
#[derive(Debug)]
pub struct Cgroups {
    /// `dispatcher-<hash>`: this data directory's peers, and only theirs.
    base: PathBuf,
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> ... - <fstype> ..."
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(unescape))?
    })
}

/// mountinfo writes a space as `\040` (and tab, newline, backslash alike).
fn unescape(s: &str) -> PathBuf {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// This process's cgroup v2 directory.
pub fn own_cgroup() -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
    let me = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = me.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')))
}

/// A stable name for a data directory: two dispatchers on one machine never
/// share a base, and a restarted one finds what its predecessor left.
pub fn base_name(data_dir: &Path) -> String {
    let p = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.as_os_str().as_encoded_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("dispatcher-{h:016x}")
}

impl Cgroups {
    /// `setting` is `auto` (the dispatcher's own cgroup, if writable), `off`,
    /// or a cgroup v2 directory that must be usable (an error says why not).
    /// `None`: peers run as process groups, and the log says why.
    pub fn open(setting: &str, data_dir: &Path) -> Result<Option<Cgroups>, String> {
        let without = |why: String| {
            tracing::info!(why = %why, "peers are tracked by process group, not cgroup");
            Ok(None)
        };
        let parent = match setting {
            "off" => return without("--cgroup off".into()),
            "auto" => match own_cgroup() {
                Some(p) => p,
                None => return without("no cgroup v2 hierarchy is mounted".into()),
            },
            dir => {
                let p = PathBuf::from(dir);
                if !p.join("cgroup.procs").is_file() {
                    return Err(format!(
                        "--cgroup {dir:?} is not a cgroup v2 directory (it has no cgroup.procs)"
                    ));
                }
                p
            }
        };
        let base = parent.join(base_name(data_dir));
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if setting == "auto" => {
                return without(format!("cannot make a cgroup in {}: {e}", parent.display()))
            }
            Err(e) => return Err(format!("--cgroup: cannot make {}: {e}", base.display())),
        }
        // Hand the memory controller down when the parent has it; refused
        // (it does not, or a hybrid host keeps memory in cgroup v1) is fine.
        let _ = std::fs::write(base.join("cgroup.subtree_control"), "+memory");
        let cg = Cgroups { base };
        let left = cg.sweep();
        if left > 0 {
            tracing::warn!(
                cgroups = left,
                "stopped peers an earlier run of the dispatcher left in their cgroups"
            );
        }
        tracing::info!(base = %cg.base.display(), "each peer runs in a cgroup v2 of its own");
        Ok(Some(cg))
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Kills and removes the peer cgroups an earlier run left behind.
    fn sweep(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(&self.base) else {
            return 0;
        };
        let left: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        let n = left.iter().filter(|p| !pids(p).is_empty()).count();
        // All killed at once, then removed within one shared deadline: a
        // start after a crash with many peers must not wait for each.
        for p in &left {
            kill(p);
        }
        let until = std::time::Instant::now() + Duration::from_secs(2);
        for p in &left {
            remove_when_empty(
                p,
                until.saturating_duration_since(std::time::Instant::now()),
            );
        }
        n
    }

    /// A fresh cgroup for one peer (an old one of the same name is emptied).
    pub fn create(&self, job: u64, peer: u32) -> io::Result<PathBuf> {
        let p = self.base.join(format!("job{job}-peer{peer}"));
        if p.exists() {
            kill(&p);
            remove_when_empty(&p, Duration::from_secs(1));
        }
        match std::fs::create_dir(&p) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(p),
        }
    }
}

impl Drop for Cgroups {
    /// A stopped dispatcher leaves no empty cgroup behind (one that still
    /// holds a peer's cgroup stays, for the next start to sweep).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// What the forked child runs before exec to enter `cgroup`; prepared
/// before the fork, since between fork and exec only async-signal-safe calls
/// may be made (open, write, close).
pub struct Enter(CString);

impl Enter {
    pub fn new(cgroup: &Path) -> io::Result<Enter> {
        use std::os::unix::ffi::OsStrExt;
        CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
            .map(Enter)
            .map_err(|_| io::Error::other("a cgroup path with a NUL byte"))
    }

    /// Moves the calling process into the cgroup. Only call it in the child.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: open/write/close on a path prepared before the fork.
        unsafe {
            let fd = libc::open(self.0.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
        }
        Ok(())
    }
}

/// The processes in a cgroup now.
pub fn pids(cgroup: &Path) -> Vec<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Signals every process of the cgroup.
pub fn signal(cgroup: &Path, sig: i32) {
    for pid in pids(cgroup) {
        // SAFETY: kill only sends a signal; a pid that is gone gives ESRCH.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// SIGKILLs the whole cgroup at once (`cgroup.kill`, Linux 5.14), racing no
/// fork; older kernels get a signal per process.
pub fn kill(cgroup: &Path) {
    if std::fs::write(cgroup.join("cgroup.kill"), "1").is_err() {
        signal(cgroup, libc::SIGKILL);
    }
}

/// Removes the cgroup once its last process is gone (rmdir fails while it is
/// populated), trying for up to `within`.
pub fn remove_when_empty(cgroup: &Path, within: Duration) -> bool {
    let until = std::time::Instant::now() + within;
    loop {
        match std::fs::remove_dir(cgroup) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) if std::time::Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                tracing::warn!(cgroup = %cgroup.display(), error = %e, "could not remove a peer's cgroup");
                return false;
            }
        }
    }
}

/// CPU seconds (every process the cgroup ever held, exited ones included)
/// and resident bytes of a cgroup's processes. `None` when it is gone.
pub fn usage(cgroup: &Path) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(cgroup.join("cpu.stat")).ok()?;
    let usec: u64 = field(&stat, "usage_usec")?;
    let rss = match std::fs::read_to_string(cgroup.join("memory.stat")) {
        // Resident as `/proc` counts it: anonymous pages plus mapped files.
        Ok(m) => field(&m, "anon").unwrap_or(0) + field(&m, "file_mapped").unwrap_or(0),
        Err(_) => {
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
            pids(cgroup)
                .into_iter()
                .filter_map(|p| crate::usage::proc_stat(p).map(|s| s.rss_pages))
                .sum::<u64>()
                * page
        }
    };
    Some((usec as f64 / 1e6, rss))
}

/// `name value` lines, as in `cpu.stat` and `memory.stat`.
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/sys/fs/a\040b"), PathBuf::from("/sys/fs/a b"));
        assert_eq!(unescape(r"/x\\"), PathBuf::from(r"/x\\"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn stat_fields_are_read_by_name() {
        let s = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(field(s, "usage_usec"), Some(1234));
        assert_eq!(field(s, "usage"), None);
        assert_eq!(field("anon 4096\nfile_mapped 0\n", "file_mapped"), Some(0));
    }

    #[test]
    fn a_data_directory_always_gets_the_same_base_and_another_one_another() {
        let a = base_name(Path::new("/nonexistent/a"));
        assert_eq!(a, base_name(Path::new("/nonexistent/a")));
        assert_ne!(a, base_name(Path::new("/nonexistent/b")));
        assert!(a.starts_with("dispatcher-") && a.len() == 27, "{a}");
    }
}
