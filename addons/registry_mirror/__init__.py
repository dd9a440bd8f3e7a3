"""artifactory-mirror: a mitmproxy addon that lets a stock registry:2 pull-through cache mirror Artifactory."""
