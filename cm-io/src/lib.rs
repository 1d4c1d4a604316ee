//! Real drivers feeding cm-core: processes, files, TCP transport, databases.
