//! What the benches share.

/// User plus system CPU seconds of a process so far (`self` or a pid), from
/// /proc/PID/stat (utime and stime, in the kernel's fixed USER_HZ of 100 ticks a second).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(name_and_cpu_seconds(&stat)?.1)
}

/// The command name and the user plus system CPU seconds of a process's or a thread's
/// `stat` line.
fn name_and_cpu_seconds(stat: &str) -> Option<(&str, f64)> {
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((&stat[open + 1..close], ticks as f64 / 100.0))
}

/// Seconds the machine's cores, all together, sat idle or waiting on the disk so far
/// (the idle and iowait columns of /proc/stat's `cpu` line, in USER_HZ ticks).
#[allow(dead_code)] // the province bench's
pub fn machine_idle_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some((cpu.get(3)? + cpu.get(4)?) as f64 / 100.0)
}

/// CPU seconds of this process's threads so far, by thread id, with each thread's name.
#[allow(dead_code)] // the province bench's
pub fn thread_cpu_seconds() -> std::collections::HashMap<u64, (String, f64)> {
    let mut by_id = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_id;
    };
    for task in tasks.flatten() {
        let Some(id) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, seconds)) = name_and_cpu_seconds(&stat) {
            by_id.insert(id, (name.to_string(), seconds));
        }
    }
    by_id
}

/// CPU seconds the threads named `name` spent from `before` to `after`
/// (`thread_cpu_seconds`), per thread: a thread that began meanwhile counts from zero, and
/// one that ended meanwhile is not counted (its last figure is not known), so that the
/// threads a runtime starts and stops cannot make the sum fall.
#[allow(dead_code)] // the province bench's
pub fn thread_cpu_spent(
    before: &std::collections::HashMap<u64, (String, f64)>,
    after: &std::collections::HashMap<u64, (String, f64)>,
    name: &str,
) -> f64 {
    after
        .iter()
        .filter(|(_, (n, _))| n == name)
        .map(|(id, (_, now))| now - before.get(id).map_or(0.0, |(_, then)| *then))
        .sum()
}
