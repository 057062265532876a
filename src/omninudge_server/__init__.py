"""omninudge_server"""
