//! What containerd, runc and runwasi are to other distributions, in-process: the image
//! store, the container runtime (youki's libcontainer behind a per-container shim) and the
//! WebAssembly runtime (wasmtime), behind one `Runtime` trait the kubelet calls.
//!
//! Built so far: [`image`], references and the content-addressed blob store. Layers,
//! snapshots, import, pulls and the runtimes are still to come (the node issue).

pub mod image;
