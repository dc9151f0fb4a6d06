//! Host metrics for the local telemetry record, read from the OS with
//! `sysinfo`: CPU, memory, and the file system holding the data dir.

use std::path::{Path, PathBuf};

use shoal_membership::telemetry::HostMetrics;
use sysinfo::{Disks, System};

/// Samples this host. CPU use is measured between two samples, so the first
/// sample reports the CPU use since the sampler was created.
pub struct HostSampler {
    system: System,
    disks: Disks,
    data_dir: PathBuf,
}

impl std::fmt::Debug for HostSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSampler")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl HostSampler {
    /// A sampler for the file system holding `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        Self {
            system,
            disks: Disks::new_with_refreshed_list(),
            data_dir: data_dir
                .canonicalize()
                .unwrap_or_else(|_| data_dir.to_path_buf()),
        }
    }

    /// The current metrics.
    pub fn sample(&mut self) -> HostMetrics {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        // The disk whose mount point is the longest prefix of the data dir.
        let disk = self
            .disks
            .list()
            .iter()
            .filter(|disk| self.data_dir.starts_with(disk.mount_point()))
            .max_by_key(|disk| disk.mount_point().as_os_str().len());
        let (disk_capacity_bytes, disk_used_bytes) = disk.map_or((0, 0), |disk| {
            (
                disk.total_space(),
                disk.total_space().saturating_sub(disk.available_space()),
            )
        });
        let memory_total_bytes = self.system.total_memory();
        HostMetrics {
            cpu_percent: f64::from(self.system.global_cpu_usage()).clamp(0.0, 100.0),
            memory_used_bytes: self.system.used_memory().min(memory_total_bytes),
            memory_total_bytes,
            disk_used_bytes,
            disk_capacity_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_valid_and_sees_the_data_dir_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut sampler = HostSampler::new(dir.path());
        let metrics = sampler.sample();
        metrics.validate().unwrap();
        assert!(metrics.memory_total_bytes > 0);
        assert!(
            metrics.disk_capacity_bytes > 0,
            "no disk found for {}",
            dir.path().display()
        );
    }
}
