//! Map key and value types shared by the eBPF programs and the node agent's datapath module.
#![no_std]
