"""Data-plane router: route table from the informer, policy, balancer, front doors."""
