"""Scale-out: device partitioning of the NATS log, worker membership and partition leases, stream workers."""
