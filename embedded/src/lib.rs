//! What containerd, runc and runwasi are to other distributions, in-process: the image
//! store, the container runtime (youki's libcontainer behind a per-container shim) and the
//! WebAssembly runtime (wasmtime), behind one `Runtime` trait the kubelet calls. Not built
//! yet: this crate is the seam the node issue fills.
