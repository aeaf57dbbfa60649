"""
Metrics as xcp-rrdd keeps them, in process: data sources sampled from the
backend every step (collector), round-robin archives (rrd), kept on disk
across restarts (storage), served over HTTP (http: /rrd_updates,
/host_rrd, /vm_rrd, /sr_rrd, /metrics in OpenMetrics text), through the
API (api: *.get_data_sources and friends) and watched by perfmon's alarms
(perfmon).
"""
