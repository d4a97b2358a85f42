"""Resolver logic below the GraphQL schema: catalog cache, dataloaders, pagination, redeem.

Nothing here imports Starlette or httpx; providers are reached only through the port.
"""
