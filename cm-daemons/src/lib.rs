//! The cluster manager daemons: cm_server, cm_agent, om_monitor, cm_ctl.
