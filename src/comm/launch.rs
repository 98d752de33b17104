//! How this process was started: by an MPI launcher (`mpirun`, `mpiexec`, `srun`) or not,
//! read from the environment the launchers set (before MPI is initialised, so the log prefix and
//! the default thread count can use it).

/// Variables that hold this process's rank, by launcher: Open MPI, PMIx (Open MPI 5, Slurm's
/// `--mpi=pmix`), MPICH/Hydra and Intel MPI (PMI), Slurm.
const RANK_VARS: [&str; 4] = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"];
/// Variables that hold the number of processes.
const SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"];
/// Variables that hold the number of processes on this node.
const LOCAL_SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"];

fn first_number(vars: &[&str]) -> Option<usize> {
    vars.iter().find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// True when an MPI launcher (or Slurm) started this process.
pub fn launched() -> bool {
    first_number(&RANK_VARS).is_some()
}

/// This process's rank, if a launcher started it.
pub fn rank() -> Option<usize> {
    first_number(&RANK_VARS)
}

/// The number of processes, if a launcher started this one.
pub fn size() -> Option<usize> {
    first_number(&SIZE_VARS)
}

/// Processes of this job on this node (1 when not launched).
pub fn local_size() -> usize {
    first_number(&LOCAL_SIZE_VARS).unwrap_or(1).max(1)
}
