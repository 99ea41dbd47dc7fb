//! The machine a report was measured on, printed with every table and
//! stored in every JSON file: figures from different machines are never
//! comparable, ratios from one run are.

use crate::kernel;

/// What we know about the machine running the benchmark.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The CPU model (`model name` in `/proc/cpuinfo`), or `unknown`.
    pub cpu_model: String,
    /// CPUs online (`sysconf(_SC_NPROCESSORS_ONLN)`).
    pub cores_online: usize,
    /// CPUs this process may run on (its affinity mask).
    pub cores_usable: usize,
    /// `uname -s -r`, e.g. `Linux 6.18.0`.
    pub kernel: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    /// The 1-, 5- and 15-minute load averages when the run started
    /// (`/proc/loadavg`): a busy machine makes every figure noisier.
    pub loadavg: Option<[f64; 3]>,
}

impl Machine {
    /// Reads the machine's description. Never fails: what cannot be read
    /// is reported as `unknown` (or 0 cores).
    pub fn detect() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| cpu_model(&info))
            .unwrap_or_else(|| "unknown".to_owned());
        let cores_online = kernel::cpus_online().unwrap_or(0);
        let cores_usable = kernel::thread_affinity().map_or(0, |cpus| cpus.len());
        let (kernel, arch) = match kernel::uname() {
            Ok((sysname, release, machine)) => (format!("{sysname} {release}"), machine),
            Err(err) => (format!("unknown ({err})"), "unknown".to_owned()),
        };
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| parse_loadavg(&text));
        Machine {
            cpu_model,
            cores_online,
            cores_usable,
            kernel,
            arch,
            loadavg,
        }
    }

    /// One line for the head of a table.
    pub fn summary(&self) -> String {
        let load = match self.loadavg {
            Some([one, five, fifteen]) => format!(", load {one:.2} {five:.2} {fifteen:.2}"),
            None => String::new(),
        };
        format!(
            "{} ({}), {} cores online, {} usable; {}{}",
            self.cpu_model, self.arch, self.cores_online, self.cores_usable, self.kernel, load
        )
    }
}

/// The first `model name` (x86) or `Hardware`/`cpu model` (other
/// architectures) line of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware", "cpu model", "Processor"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                (name.trim() == *key && !value.trim().is_empty()).then(|| value.trim().to_owned())
            })
        })
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_loadavg() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(
            parse_loadavg("0.50 1.25 2.00 1/123 456\n"),
            Some([0.5, 1.25, 2.0])
        );
        assert_eq!(parse_loadavg("garbage"), None);
    }

    #[test]
    fn detect_reports_this_machine() {
        let machine = Machine::detect();
        assert!(machine.cores_online >= 1);
        assert!(machine.summary().contains(&machine.kernel));
    }
}
