//! With the `mpi` feature: compiles `src/comm/mpi/shim.c` against the system MPI headers (found by
//! rsmpi's own probe), for the few MPI constants that are C macros and so not in rsmpi's bindings.
//! With the `dnnl` feature: generates the bindings of oneDNN's C API (tensor/dnnl) and links it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "mpi")]
    mpi_shim();
    #[cfg(feature = "dnnl")]
    dnnl_bindings();
}

/// With the `dnnl` feature: bindings of oneDNN's C API (Debian's libdnnl-dev, oneDNN 2.x), and
/// the link to libdnnl.
#[cfg(feature = "dnnl")]
fn dnnl_bindings() {
    let header = ["/usr/include/oneapi/dnnl/dnnl.h", "/usr/local/include/oneapi/dnnl/dnnl.h"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(header) = header else {
        panic!("the `dnnl` feature needs oneDNN's headers (oneapi/dnnl/dnnl.h); hint: apt-get install -y libdnnl-dev libclang-dev");
    };
    println!("cargo:rerun-if-changed={header}");
    println!("cargo:rustc-link-lib=dnnl");
    // Debian builds oneDNN on OpenMP: the team size is set through libgomp (omp_set_num_threads).
    println!("cargo:rustc-link-lib=gomp");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindgen::Builder::default()
        .header(header)
        .allowlist_function("dnnl_.*")
        .allowlist_type("dnnl_.*")
        .allowlist_var("DNNL_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|e| {
            panic!("cannot generate oneDNN bindings from {header}: {e}; hint: apt-get install -y libclang-dev")
        })
        .write_to_file(out.join("dnnl_sys.rs"))
        .expect("cannot write the oneDNN bindings");
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
