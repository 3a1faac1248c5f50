"""Data-plane router (issue 5): route table from the informer, policy, balancer, front doors."""
