//! Embeds the built dashboard (`dist/` at the workspace root, made by
//! `trunk build`) into the binary, each file also gzip- and
//! brotli-compressed (the smallest the browser takes is sent), so one
//! binary is all a user copies to a machine. Without a `dist/` the binary
//! still builds and says how to build the dashboard.

use std::io::Write;
use std::path::{Path, PathBuf};

fn main() {
    let dist = std::env::var("DISPATCHER_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist"));
    println!("cargo:rerun-if-env-changed=DISPATCHER_DIST");
    println!("cargo:rerun-if-changed={}", dist.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (i, rel) in files.iter().enumerate() {
        let src = dist.join(rel);
        println!("cargo:rerun-if-changed={}", src.display());
        let bytes = std::fs::read(&src).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).unwrap();
        let gz_path = out.join(format!("asset-{i}.gz"));
        std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();
        let mut br = Vec::new();
        {
            // Quality 11, a 4 MiB window: as small as brotli makes it.
            let mut w = brotli::CompressorWriter::new(&mut br, 1 << 16, 11, 22);
            w.write_all(&bytes).unwrap();
        }
        let br_path = out.join(format!("asset-{i}.br"));
        std::fs::write(&br_path, br).unwrap();
        code.push_str(&format!(
            "    ({:?}, include_bytes!({:?}), include_bytes!({:?}), include_bytes!({:?})),\n",
            format!("/{}", rel.replace('\\', "/")),
            src.canonicalize().unwrap(),
            gz_path,
            br_path
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("assets.rs"), code).unwrap();
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().to_string());
        }
    }
}
