"""The cluster operator: ClusterPolicy → node labels, operand DaemonSets, NodeFeatureRules, RuntimeClasses."""
