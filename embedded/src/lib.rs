//! What containerd, runc and runwasi are to other distributions, in-process: the image
//! store, the container runtime (youki's libcontainer behind a per-container shim) and the
//! WebAssembly runtime (wasmtime), behind one `Runtime` trait the kubelet calls.
//!
//! Start at [`runtime`] (the `Runtime` trait the kubelet calls), then [`image`] (the
//! store: blobs, names, layers, pulls) and [`container`] (a container's folder, its
//! shim, and the pod's shared namespaces).

pub mod container;
pub mod image;
pub mod runtime;
