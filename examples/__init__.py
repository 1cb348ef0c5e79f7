"""Apps that bring NatLangChain's schema up to date before they serve (see README)."""
