"""omninudge_adapters/memory"""
