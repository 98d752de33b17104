//! With the `mpi` feature: compiles `src/comm/mpi/shim.c` against the system MPI headers (found by
//! rsmpi's own probe), for the few MPI constants that are C macros and so not in rsmpi's bindings.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "mpi")]
    mpi_shim();
}

#[cfg(feature = "mpi")]
fn mpi_shim() {
    println!("cargo:rerun-if-changed=src/comm/mpi/shim.c");
    let lib = match build_probe_mpi::probe() {
        Ok(lib) => lib,
        Err(errs) => {
            for e in errs {
                println!("cargo:warning=MPI probe: {e}");
            }
            panic!("the `mpi` feature needs an MPI library; hint: apt-get install -y libopenmpi-dev openmpi-bin libclang-dev clang pkg-config");
        }
    };
    let mut build = cc::Build::new();
    build.file("src/comm/mpi/shim.c");
    for p in &lib.include_paths {
        build.include(p);
    }
    build.compile("convoy_mpi_shim");
}
